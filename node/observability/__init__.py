"""What the node tells its operator about itself; none of it decides anything the node does.

- `metrics`: the Prometheus metrics, read from what the parts expose (it imports none of them).
- `health`: `/healthz` and `/readyz`, with the reasons the node is not ready.
- `memory`: the process's resident memory, and handing freed heap back to the OS when idle.
- `logging`: one short line per event, human-readable or JSON lines.
- `conditions`: what is wrong right now (a stale endpoint, a key that cannot send), logged once per change, and
  the count of outside answers by source and `Action`.
"""
