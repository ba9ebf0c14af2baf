"""Network views: any program (C, Go, shells...) on a threadnet stack, supervised.

``threadnet run --stack PATH -- PROGRAM`` (and ``--link URL --config CFG``) starts the
program under a seccomp filter (``bpf``) whose listener a supervisor in the
``threadnet run`` process serves (``supervisor``): AF_INET/AF_INET6 TCP sockets become
sockets on the stack, injected into the program as real descriptors. x86-64, Linux
5.14 or later; see docs/views.md.
"""
