"""The options that place a job's ranks on several hosts, shared by `runner submit` and `runner agent`."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

MasterAddrOpt = Annotated[Optional[str], typer.Option(
    "--master-addr", help="Address of node 0 that every node can reach (the rendezvous), with --nnodes > 1.")]
MasterPortOpt = Annotated[int, typer.Option("--master-port", help="Rendezvous port on node 0.")]
