"""What a session leaves on disk: the atomic session folder and its HTML pages.

- :mod:`~movement.report.folder`: the session folder (CSV tables, ``session.json``,
  ``landmarks.npz``), written atomically;
- :mod:`~movement.report.session_page`: the interactive ``report.html``;
- :mod:`~movement.report.htmlkit`: what both pages share (styles, staged writes).
"""
