"""The built-in proxy: changeover's own data plane (HTTP/1.1, asyncio + uvloop + httptools).

It splits reads by weight with sticky sessions, pins writes to the current write owner, can hold
writes during the data handoff, mirrors a share of reads to compare the two apps, and keeps
per-backend statistics. It runs as its own process, driven through an authenticated admin API.
"""
