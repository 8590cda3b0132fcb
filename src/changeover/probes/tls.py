"""TLS probe: a server's certificate is trusted, covers the name clients use and is not about to
expire.

``gather`` does a verifying handshake (with SNI); when verification fails it does a second one
without verification only to read the certificate, so that the verdict can still say *why*
(expired, wrong host, unknown issuer) and when it expires. ``interpret`` is pure: it parses the
certificate with ``cryptography`` and judges it against the clock reading taken in ``gather``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import Field

from changeover.errors import UsageError
from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Unreachable,
)

# OpenSSL verification codes (X509_V_ERR_*) that mean "the issuer is not trusted".
_UNKNOWN_ISSUER = frozenset({2, 18, 19, 20, 21})
# Codes about validity dates only: the chain itself was built up to a trusted root, because
# OpenSSL builds the chain before it checks dates. Dates are judged from the certificate.
_DATES_ONLY = frozenset({9, 10})


def trust_context(ca_file: Path | None, *, what: str = "ca_file") -> ssl.SSLContext:
    """A client context that verifies certificates against ``ca_file``, else the system store."""
    try:
        if ca_file is not None:
            return ssl.create_default_context(cafile=str(ca_file))
        context = ssl.create_default_context()
    except FileNotFoundError as exc:
        raise UsageError(f"{what}: {ca_file} does not exist") from exc
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"{what}: {ca_file} is not a PEM bundle of CA certificates") from exc
    paths = ssl.get_default_verify_paths()
    if not any(p and os.path.exists(p) for p in (paths.cafile, paths.capath)):
        # No system trust store (a slim container): fall back to Mozilla's bundle.
        import certifi

        context.load_verify_locations(certifi.where())
    return context


@functools.cache
def system_trust() -> ssl.SSLContext:
    """One shared verifying context on the system store (loading it costs ~0.1 s); callers must
    not change it."""
    return trust_context(None)


class TlsParams(ProbeParams):
    host: str = Field(description="Host name or IP address to connect to.")
    port: int = Field(default=443, ge=1, le=65535, description="TCP port.")
    server_name: str | None = Field(
        default=None,
        description="Name sent as SNI and checked against the certificate (default: host).",
    )
    min_days: int = Field(
        default=14, description="Fewest days the certificate must still be valid."
    )
    ca_file: str | None = Field(
        default=None, description="CA bundle to trust (default: the system's trust store)."
    )
    check_hostname: bool = Field(
        default=True, description="Require the certificate to cover `server_name`."
    )


@dataclass(frozen=True)
class TlsHandshake:
    """What the handshakes showed: the server's certificate and OpenSSL's verification result."""

    address: str  # host:port
    server_name: str
    certificate: bytes  # DER
    verify_error: str | None  # None: the chain verified
    verify_code: int | None
    protocol: str | None
    checked_at: datetime


class TlsProbe(Probe[TlsParams, TlsHandshake]):
    """Handshake with SNI and judge the certificate: trust, host name, expiry."""

    name = "tls"
    summary = (
        "A TLS certificate is trusted, covers the server name and is valid for at least "
        "`min_days` more days."
    )
    Params = TlsParams

    async def gather(self, params: TlsParams, ctx: ProbeContext) -> TlsHandshake:
        server_name = params.server_name or params.host
        ca_file = ctx.path(params.ca_file) if params.ca_file else None
        verifying = trust_context(ca_file)
        # Host names are matched in ``interpret`` so that every problem can be named at once.
        verifying.check_hostname = False
        address = _address(params.host, params.port)
        verify_error = None
        verify_code = None
        try:
            # Give up before ``run_probe`` does, so that the message can name the server.
            async with asyncio.timeout(params.timeout * 0.7):
                try:
                    der, protocol = await _handshake(params, server_name, verifying)
                except ssl.SSLCertVerificationError as exc:
                    verify_error = exc.verify_message or str(exc.reason)
                    verify_code = exc.verify_code
                    reading = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    reading.check_hostname = False
                    reading.verify_mode = ssl.CERT_NONE
                    der, protocol = await _handshake(params, server_name, reading)
        except TimeoutError as exc:
            raise Unreachable(
                f"{address} did not complete a TLS handshake within {params.timeout:g}s"
            ) from exc
        return TlsHandshake(
            address, server_name, der, verify_error, verify_code, protocol, ctx.now()
        )

    def interpret(self, params: TlsParams, raw: TlsHandshake) -> CheckResult:
        return judge_certificate(params, raw)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _handshake(
    params: TlsParams, server_name: str, context: ssl.SSLContext
) -> tuple[bytes, str | None]:
    address = _address(params.host, params.port)
    try:
        _, writer = await asyncio.open_connection(
            params.host,
            params.port,
            ssl=context,
            server_hostname=server_name,
            ssl_handshake_timeout=params.timeout,
        )
    except ssl.SSLCertVerificationError:
        raise
    except ssl.SSLError as exc:
        raise Unreachable(f"TLS handshake with {address} failed: {_ssl_reason(exc)}") from exc
    except socket.gaierror as exc:
        raise Unreachable(f"cannot connect to {address}: host name not found") from exc
    except ConnectionRefusedError as exc:
        raise Unreachable(f"cannot connect to {address}: connection refused") from exc
    except ConnectionResetError as exc:
        raise Unreachable(
            f"TLS handshake with {address} failed: the server closed the connection"
        ) from exc
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise Unreachable(f"cannot connect to {address}: {reason}") from exc
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        protocol = ssl_object.version() if ssl_object is not None else None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not der:
        raise Unreachable(f"{address} completed the TLS handshake without a certificate")
    return der, protocol


def _ssl_reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"):
        return "the server did not answer with TLS (is this a plain-text port?)"
    if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        return "the server closed the connection"
    if reason in ("TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL"):
        return "no TLS version in common with the server"
    if reason in ("SSLV3_ALERT_HANDSHAKE_FAILURE", "NO_SHARED_CIPHER"):
        return "the server refused the handshake (no cipher or protocol in common?)"
    return reason.replace("_", " ").lower() if reason else str(exc)


# --- the pure verdict -------------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateInfo:
    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: datetime
    not_after: datetime

    @property
    def names(self) -> tuple[str, ...]:
        return self.dns_names + self.ip_addresses


def read_certificate(der: bytes) -> CertificateInfo:
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns_names, ips = (), ()
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=_issuer_name(cert),
        dns_names=dns_names,
        ip_addresses=ips,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def _issuer_name(cert: x509.Certificate) -> str:
    common_names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    if common_names:
        return str(common_names[0].value)
    return cert.issuer.rfc4514_string()


def hostname_matches(name: str, dns_names: tuple[str, ...], ip_addresses: tuple[str, ...]) -> bool:
    """RFC 6125 matching: IPs against IP SANs; names against DNS SANs, a wildcard only as the
    whole left-most label (``*.example.com`` covers ``a.example.com``, not ``a.b.example.com``).
    The subject's common name is not used, as browsers and OpenSSL no longer use it."""
    try:
        ip = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        pass
    else:
        return any(_same_ip(ip, candidate) for candidate in ip_addresses)
    wanted = _a_label(name.rstrip(".").lower())
    first, _, rest = wanted.partition(".")
    for pattern in dns_names:
        pattern = pattern.rstrip(".").lower()
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in pattern[2:] and first and rest == pattern[2:]:
            return True
    return False


def _same_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, candidate: str) -> bool:
    try:
        return ip == ipaddress.ip_address(candidate)
    except ValueError:
        return False


def _a_label(name: str) -> str:
    try:
        return name.encode("idna").decode("ascii") if not name.isascii() else name
    except UnicodeError:
        return name


def judge_certificate(params: TlsParams, raw: TlsHandshake) -> CheckResult:
    """Pure: trust, host name and expiry of the certificate in ``raw`` at ``raw.checked_at``."""
    cert = read_certificate(raw.certificate)
    now = raw.checked_at
    left = cert.not_after - now
    days_left = int(left.total_seconds() // 86400)
    trusted = raw.verify_code is None or raw.verify_code in _DATES_ONLY
    matched = hostname_matches(raw.server_name, cert.dns_names, cert.ip_addresses)

    evidence = [
        Measure("subject", cert.subject),
        Measure("issuer", cert.issuer),
        Measure("sans", list(cert.names)),
        Measure("not_after", cert.not_after.isoformat()),
        Measure(
            "days_left",
            days_left,
            expected=f">= {params.min_days}",
            ok=days_left >= params.min_days,
        ),
        Measure("chain_verified", raw.verify_error is None),
        Measure("issuer_trusted", trusted, expected="true", ok=trusted),
        Measure(
            "hostname_matched",
            matched,
            expected=f"covers {raw.server_name}",
            ok=matched if params.check_hostname else None,
        ),
    ]
    if raw.protocol:
        evidence.append(Measure("protocol", raw.protocol))

    problems = []
    if left.total_seconds() < 0:
        problems.append(
            f"certificate expired {_span(-left.total_seconds())} ago "
            f"(on {cert.not_after:%Y-%m-%d %H:%M} UTC)"
        )
    if cert.not_before > now:
        problems.append(f"certificate is not valid before {cert.not_before:%Y-%m-%d %H:%M} UTC")
    if params.check_hostname and not matched:
        problems.append(f"certificate is for {_names(cert)}, not {raw.server_name}")
    if not trusted:
        why = " (self-signed or unknown issuer)" if raw.verify_code in _UNKNOWN_ISSUER else ""
        problems.append(f"certificate not trusted{why}: {raw.verify_error}")
    if left.total_seconds() >= 0 and days_left < params.min_days:
        problems.append(f"expires in {_plural(days_left, 'day')} (minimum {params.min_days})")

    details = {"verify_error": raw.verify_error} if raw.verify_error else {}
    if problems:
        return CheckResult.fail(f"{raw.address}: " + "; ".join(problems), *evidence, **details)
    return CheckResult.passed(
        f"certificate for {raw.server_name} issued by {cert.issuer}, valid until "
        f"{cert.not_after:%Y-%m-%d} ({_plural(days_left, 'day')} left)",
        *evidence,
    )


def _names(cert: CertificateInfo) -> str:
    names = list(cert.names)
    if not names:
        return f"{cert.subject} (no subject alternative names)"
    if len(names) > 4:
        return ", ".join(names[:4]) + f" and {len(names) - 4} more"
    return ", ".join(names)


def _span(seconds: float) -> str:
    if seconds >= 86400:
        return _plural(int(seconds // 86400), "day")
    if seconds >= 3600:
        return _plural(int(seconds // 3600), "hour")
    return _plural(max(1, int(seconds // 60)), "minute")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
