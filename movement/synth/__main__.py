"""``python -m movement.synth [OUT_DIR]``: regenerate the bundled sample videos."""

from movement.synth.render import main

main()
