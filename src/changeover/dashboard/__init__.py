"""The live war-room page (``changeover dashboard``): the journal, drawn and pushed as it grows.

``board.py`` folds journal events into what the page shows (pure); ``feed.py`` polls the journal
once for every open page and pushes updates over server-sent events; ``app.py`` serves the page,
the stream and the three actions (approve, sign off, roll back), guarded by ``auth.py`` (tokens,
sessions, the loopback rule) and ``csrf.py``. ``static/`` is the page: HTML, CSS, vanilla JS.
"""
