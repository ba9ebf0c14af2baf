"""Link emulation in the manner of VDE's wirefilter: loss, delay, duplication, bandwidth,
speed, noise, MTU and capacity limits, one emulated channel per direction.

``values`` parses wirefilter's ``[LR|RL]NUMBER[+JITTER][U|N]`` settings; ``core`` is the
sans-IO channel model, driven by explicit timestamps so that it is deterministic and can
sit under any event loop.
"""
