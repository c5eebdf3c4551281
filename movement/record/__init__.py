"""`movement record`: a local page that checks the camera, runs the protocol, records
the consult and analyses it (:mod:`movement.record.server`, ``page.html``)."""
