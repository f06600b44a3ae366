"""Plugin registries: validation at registration, lookups, built-in members and the CLI list."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pydantic import ValidationError

from qbench.params import NoParams, Params, describe_params
from qbench.registry import Registry, RegistryError
from tests.conftest import REPO, run_qbench


def member(name: Any, description: str = "a test member", **attrs: Any) -> type:
    return type(
        "Member", (), {"name": name, "description": description, "Params": NoParams, **attrs}
    )


@pytest.fixture
def things() -> Registry[Any]:
    return Registry("thing", ("Params",))


def test_register_as_decorator_and_bare(things: Registry[Any]) -> None:
    @things.register
    class Alpha:
        name = "alpha"
        description = "first"
        Params = NoParams

    beta = member("beta")
    assert things.register(beta) is beta
    gamma = member("not-used")
    things.register(gamma, name="gamma")
    assert things.get("alpha") is Alpha and things.get("gamma") is gamma
    assert list(things) == ["alpha", "beta", "gamma"] and len(things) == 3
    assert "beta" in things and "delta" not in things


@pytest.mark.parametrize("description", ["", "   ", None])
def test_member_without_description_is_rejected(things: Registry[Any], description: Any) -> None:
    with pytest.raises(RegistryError, match="description"):
        things.register(member("alpha", description=description))
    assert "alpha" not in things


@pytest.mark.parametrize("name", ["Alpha", "has space", "9lives", "", None, 3])
def test_member_with_bad_name_is_rejected(things: Registry[Any], name: Any) -> None:
    with pytest.raises(RegistryError, match="name"):
        things.register(member(name))
    assert len(things) == 0


def test_member_missing_a_required_attribute_is_rejected() -> None:
    registry: Registry[Any] = Registry("thing", ("Params", "open"))
    incomplete = member("alpha")  # has Params, lacks open
    with pytest.raises(RegistryError, match="lacks open"):
        registry.register(incomplete)
    assert "alpha" not in registry
    registry.register(member("alpha", open=lambda: None))
    assert "alpha" in registry


def test_double_registration_warns_and_the_later_wins(things: Registry[Any]) -> None:
    first, second = member("alpha"), member("alpha", description="second")
    things.register(first)
    with pytest.warns(UserWarning, match="registered twice"):
        things.register(second)
    assert things.get("alpha") is second
    assert len(things) == 1


def test_registering_the_same_object_again_is_silent(things: Registry[Any]) -> None:
    import warnings

    alpha = member("alpha")
    things.register(alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        things.register(alpha)


def test_names_filters_with_fnmatch(things: Registry[Any]) -> None:
    for name in ("resnet18", "resnet50", "mobilenet_v2", "vit.base"):
        things.register(member(name))
    assert things.names("res*") == ["resnet18", "resnet50"]
    assert things.names("*net*") == ["mobilenet_v2", "resnet18", "resnet50"]
    assert things.names("resnet?8") == ["resnet18"]
    assert things.names() == ["mobilenet_v2", "resnet18", "resnet50", "vit.base"]
    assert things.names("nothing*") == []


def test_get_unknown_lists_known_names(things: Registry[Any]) -> None:
    with pytest.raises(RegistryError, match=r"unknown thing 'x' \(known: none\)"):
        things.get("x")
    things.register(member("beta"))
    things.register(member("alpha"))
    with pytest.raises(RegistryError, match=r"unknown thing 'gamma' \(known: alpha, beta\)"):
        things.get("gamma")


def test_copy_is_independent(things: Registry[Any]) -> None:
    things.register(member("alpha"))
    clone = things.copy()
    clone.register(member("beta"))
    things.register(member("gamma"))
    assert list(things) == ["alpha", "gamma"]
    assert list(clone) == ["alpha", "beta"]
    clone.unregister("alpha")
    assert "alpha" in things and "alpha" not in clone
    assert clone.family == "thing" and clone.required == ("Params",)
    with pytest.raises(RegistryError):
        clone.register(member("bad", description=""))


# --- built-in members -------------------------------------------------------------------------

BUILT_IN = {
    "models": {"resnet18", "mobilenet_v2", "digits_cnn", "onnx_file"},
    "methods": {"fp32", "static_int8"},
    "backends": {"onnxruntime", "torch"},
    "transports": {"subprocess"},
    "executors": {"local"},
    "datasets": {"digits", "imagenet_samples", "sample_photos"},
}


def test_load_all_registers_the_built_in_members() -> None:
    from qbench.plugins import load_all

    families = load_all()
    assert load_all() is families  # once per process
    for family, expected in BUILT_IN.items():
        assert expected <= set(families.by_name(family)), family
    assert families.by_name("power-meters") is families.power_meters


def test_every_member_is_described_with_typed_described_params() -> None:
    from qbench.plugins import load_all

    families = load_all()
    seen = 0
    for family in families.names:
        registry = families.by_name(family)
        for name, obj in registry.items():
            assert isinstance(obj.description, str) and obj.description.strip(), name
            for attr in registry.required:
                assert hasattr(obj, attr), (name, attr)
            params = getattr(obj, "Params", NoParams)
            assert isinstance(params, type) and issubclass(params, Params), name
            for field_name, field in params.model_fields.items():
                assert field.annotation not in (None, Any), (name, field_name)
                assert field.description and field.description.strip(), (name, field_name)
            seen += 1
    assert seen >= sum(len(v) for v in BUILT_IN.values())


def test_params_reject_unknown_keys_and_are_frozen() -> None:
    from qbench.plugins import load_all

    params_cls = load_all().methods.get("static_int8").Params
    with pytest.raises(ValidationError):
        params_cls(calibratr="entropy")
    with pytest.raises(ValidationError):
        params_cls(calibrator="kl")
    params = params_cls(calibrator="entropy")
    with pytest.raises(ValidationError):
        params.per_channel = False  # type: ignore[misc]
    rows = {r[0]: r for r in describe_params(params_cls)}
    assert rows["calibrator"][1:3] == ("minmax|entropy|percentile|mse", "'minmax'")
    assert rows["per_channel"][1] == "bool"


# --- CLI --------------------------------------------------------------------------------------


def test_list_methods_shows_every_method_with_its_parameters() -> None:
    from qbench.plugins import load_all

    proc = run_qbench("list", "methods")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("methods:\n")
    built_in = [
        (name, method)
        for name, method in load_all().methods.items()
        if method.__module__.startswith("qbench.")  # not test plugins another test loaded
    ]
    assert {name for name, _ in built_in} >= BUILT_IN["methods"]
    for name, method in built_in:
        assert f"  {name} " in proc.stdout
        for pname, ptype, default, _ in describe_params(method.Params):
            assert f"{pname}: {ptype} = {default}" in proc.stdout
    assert "calibrator: minmax|entropy|percentile|mse = 'minmax'" in proc.stdout
    assert "backends:" not in proc.stdout


def test_list_pattern_filters() -> None:
    proc = run_qbench("list", "models", "res*")
    assert proc.returncode == 0, proc.stderr
    assert "resnet18" in proc.stdout and "digits_cnn" not in proc.stdout


def test_qbench_plugins_env_adds_members() -> None:
    plain = run_qbench("list", "backends")
    assert plain.returncode == 0, plain.stderr
    assert "faulty" not in plain.stdout
    proc = run_qbench("list", "backends", plugins="tests.plugins.faulty")
    assert proc.returncode == 0, proc.stderr
    assert "  faulty " in proc.stdout and "onnxruntime" in proc.stdout
    assert "UNAVAILABLE: needs Python package(s) qbench_no_such_package_xyz" in proc.stdout


def test_cli_help_imports_no_heavy_library() -> None:
    code = textwrap.dedent(
        """
        import contextlib, io, sys
        import qbench.cli
        heavy = ("torch", "onnxruntime", "pandas", "plotly")
        after_import = sorted(m for m in heavy if m in sys.modules)
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                qbench.cli.main(["--help"])
        except SystemExit as exc:
            code = exc.code
        print(code, "usage: qbench" in out.getvalue(), after_import,
              sorted(m for m in heavy if m in sys.modules))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "True", "[]", "[]"]
