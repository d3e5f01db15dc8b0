"""The web console: the mirrors, their pending and rejected files, search by image, a library's entries,
and "Sync now", in a browser. `imgsync ui` serves it (`imgsync watch --ui` too).

One more thin client of imgsync.api, like the command line and the daemon: it never opens the manifest's
Store, the executor or a gallery client itself. Its pieces:

    server.py   waitress in a thread or the foreground; the URL with its token; the browser
    app.py      WSGI plumbing and the guards every request passes (auth.py: token, Host, Origin)
    routes.py   the pages (templates/, Jinja2) and the JSON calls of their script (static/console.js)
    thumbs.py   paths confined to a mirror's folder, thumbnails made with Pillow, their cache
    jobs.py     "Sync now": a reconcile in a background thread, its progress polled by the page

Every asset is served from the package (no CDN, no build step). With a gallery by URL (the cloud), none
of the local gallery's search engine (numpy, OpenCV, onnxruntime, faiss) is imported.
"""

from imgsync.console.server import RunningConsole, start_console

__all__ = ["RunningConsole", "start_console"]
