"""``open_backend``: detect the cgroup mode and open the backend for it (V1Backend, V2Backend,
or NullBackend with the reason when cgroups cannot be used here).

It never raises just because cgroups cannot be written: it warns once and returns a
NullBackend instead. The factory imports the backends; they import only the interface and
helpers of ``shared.resources.cgroup``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from shared.resources.cgroup import (
    V1_CONTROLLERS,
    CgroupUnavailable,
    NullBackend,
    detect_mode,
    own_cgroup_paths,
    tree_base,
    v1_mounts,
    v2_mount,
)

if TYPE_CHECKING:
    from shared.resources.cgroup_v1 import V1Backend
    from shared.resources.cgroup_v2 import V2Backend

log = logging.getLogger("bdt.cgroup")


def _open_v1(tree_name: str, mounts: str, own: dict[str, str]) -> V1Backend:
    from shared.resources.cgroup_v1 import V1Backend  # cgroupspy only where v1 is used

    mnts = v1_mounts(mounts)
    bases: dict[str, Path] = {}
    for ctrl in V1_CONTROLLERS:
        if ctrl not in mnts or ctrl not in own:
            if ctrl in ("memory", "cpu"):
                raise CgroupUnavailable(f"cgroup v1 '{ctrl}' controller is not mounted")
            continue
        base = Path(mnts[ctrl]) / tree_base(own[ctrl], tree_name).lstrip("/")
        if not base.is_dir():
            raise CgroupUnavailable(f"own {ctrl} cgroup {base} not found (foreign namespace?)")
        bases[ctrl] = base
    return V1Backend(tree_name, bases)


def _open_v2(tree_name: str, mounts: str, own: dict[str, str], v2_root: Path | None) -> V2Backend:
    from shared.resources.cgroup_v2 import V2Backend

    root = v2_root or (Path(m) if (m := v2_mount(mounts)) else None)
    if root is None:
        raise CgroupUnavailable("no cgroup2 filesystem mounted")
    base = root / tree_base(own.get("unified", "/"), tree_name).lstrip("/")
    if not base.is_dir():
        raise CgroupUnavailable(f"own cgroup {base} not found")
    return V2Backend(tree_name, base, root)


def open_backend(
    tree_name: str = "bitdaytrader",
    *,
    mounts_path: str = "/proc/self/mounts",
    proc_cgroup_path: str = "/proc/self/cgroup",
    v2_root: Path | str | None = None,
    create: bool = True,
) -> V1Backend | V2Backend | NullBackend:
    """Detect the cgroup mode, create the project tree root and return a backend.

    ``v2_root`` forces the v2 backend rooted at that directory (tests, unusual mounts).
    ``create`` False: only read (reports, ``bdt status``/``doctor``): the tree is not made, and
    a slice that does not exist reads as unknown figures. Any
    failure to use cgroups yields a NullBackend and ONE warning instead of an exception.
    """
    backend: V1Backend | V2Backend
    try:
        mounts = Path(mounts_path).read_text()
        own = own_cgroup_paths(Path(proc_cgroup_path).read_text())
        mode = "v2" if v2_root is not None else detect_mode(mounts)
        if mode in ("v1", "hybrid"):
            backend = _open_v1(tree_name, mounts, own)
            backend.mode = mode
        elif mode == "v2":
            backend = _open_v2(tree_name, mounts, own, Path(v2_root) if v2_root else None)
        else:
            raise CgroupUnavailable("no cgroup filesystem is mounted")
        if create:
            backend.ensure_root()
    except CgroupUnavailable as e:
        reason = str(e)
    except OSError as e:
        reason = f"cannot write cgroups: {e.strerror or e} ({e.filename or mounts_path})"
    else:
        return backend
    log.warning("cgroup limits are NOT enforced: %s", reason)
    return NullBackend(tree_name, reason)
