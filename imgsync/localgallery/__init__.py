"""The local gallery: an image-search server that speaks the Baidu image-search HTTP protocol.

It is imgsync's embedded default, the counterpart of every test, and a self-hosted gallery.
It shares only plain data (imgsync.libraries) with the rest of imgsync: the client in
imgsync.gallery and this server are independent implementations of one protocol.
"""
