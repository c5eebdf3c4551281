"""What a session leaves on disk: the atomic session folder and its HTML pages.

- :mod:`~movement.report.folder`: the session folder (CSV tables, ``session.json``,
  ``landmarks.npz``), written atomically;
- :mod:`~movement.report.session_page`: the interactive ``report.html``: the
  session's records prepared for its template, with the plotly figures from
  :mod:`~movement.report.figures` and the face images from
  :mod:`~movement.report.images`;
- :mod:`~movement.report.comparison_page`: ``comparison.html`` from the records
  :mod:`movement.clinic.compare` prepares (and its figures);
- :mod:`~movement.report.htmlkit`: what both pages share (the Jinja2 templates,
  staged writes);
- ``templates/``: the pages themselves: ``base.html`` (house style, page frame),
  ``report.html`` with ``step.html`` and ``report.js``, ``comparison.html``, and
  ``macros.html`` (the tables and badges).
"""
