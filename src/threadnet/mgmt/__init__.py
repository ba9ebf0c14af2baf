"""Management: the vde_switch console protocol and the command tables behind it."""
