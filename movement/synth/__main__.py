"""``python -m movement.synth [OUT_DIR]``: regenerate the bundled sample videos."""

from movement.synth.generator import main

main()
