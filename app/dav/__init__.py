"""CardDAV (RFC 6352 on WebDAV, RFC 4918; collection sync, RFC 6578; discovery, RFC 6764) at ``/dav/``.

:mod:`app.dav.xml` reads the request bodies and writes the multistatus answers,
:mod:`app.dav.query` matches ``addressbook-query`` filters, :mod:`app.dav.handler` answers each
method over the contacts store, and :mod:`app.dav.routes` mounts it in the application.
"""
