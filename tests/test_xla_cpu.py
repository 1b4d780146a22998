"""jaxviz.xla_cpu: the first model load (or the CLI) turns XLA:CPU's YNNPACK fusions off, unless the user chose
otherwise; importing jaxviz changes nothing."""

import json
import os
import subprocess
import sys

import pytest

from jaxviz import xla_cpu

PROBE = """
import json, os, sys
if sys.argv[1] == "jax-first":
    import jax.numpy as jnp
    jnp.ones(1).block_until_ready()  # starts the CPU backend before jaxviz is imported
import jax, jax.numpy as jnp
import jaxviz
import_flags = os.environ.get("XLA_FLAGS", "")
if sys.argv[1] != "import-only":
    jaxviz.load("vgg_tiny", "random:0")
f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = f.lower(jnp.ones((1, 32, 32, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text()
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "ynn": "ynn_fusion" in hlo,
                  "added": jaxviz.xla_cpu.added, "import_flags": import_flags}))
"""


def _probe(mode="plain", **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", xla_cpu.KEEP_ENV)}
    env.update(env_changes)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _jax_uses_ynn_by_default() -> bool:
    return _probe(**{xla_cpu.KEEP_ENV: "1"})["ynn"]


def test_first_load_turns_ynn_fusions_off():
    got = _probe()
    assert got["import_flags"] == "", "importing jaxviz changed XLA_FLAGS"
    assert got["added"] and xla_cpu.YNN_FLAG in got["flags"].split()
    assert not got["ynn"], "a convolution still compiled to a YNNPACK fusion"


def test_import_alone_changes_nothing():
    got = _probe("import-only")
    assert not got["added"] and got["flags"] == ""


def test_opt_out_keeps_jax_defaults():
    got = _probe(**{xla_cpu.KEEP_ENV: "1"})
    assert not got["added"] and got["flags"] == ""


def test_users_own_flag_wins():
    mine = "--xla_cpu_experimental_ynn_fusion_type=individual_convolution"
    got = _probe(XLA_FLAGS=mine)
    assert not got["added"] and got["flags"] == mine
    if _jax_uses_ynn_by_default():
        assert got["ynn"]


def test_too_late_once_jax_backend_started():
    got = _probe("jax-first")
    assert not got["added"] and got["flags"] == ""
    if not _jax_uses_ynn_by_default():
        pytest.skip("this jaxlib does not use YNNPACK fusions by default")
    assert got["ynn"]


def test_users_environment_strips_only_what_jaxviz_added(monkeypatch):
    monkeypatch.setattr(xla_cpu, "added", True)
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=2 {xla_cpu.YNN_FLAG}")
    env = xla_cpu.users_environment()
    assert env["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert env[xla_cpu.KEEP_ENV] == "1"
    monkeypatch.setattr(xla_cpu, "added", False)
    assert xla_cpu.users_environment()["XLA_FLAGS"].endswith(xla_cpu.YNN_FLAG)
