"""config.yml + apps.d -> Registry: every validation error, warning and merge rule."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from orchestratr.errors import ConfigError
from orchestratr.paths import Paths
from orchestratr.registry.load import (
    DEFAULT_CONFIG,
    ensure_config,
    load_registry,
    load_without_config,
)
from orchestratr.registry.model import RestartPolicy


def setup(tmp_path: Path, config: str, **drop_ins: str) -> Paths:
    paths = Paths.resolve(tmp_path / "cfg")
    paths.apps_dir.mkdir(parents=True)
    paths.config_file.write_text(textwrap.dedent(config))
    for name, text in drop_ins.items():
        (paths.apps_dir / name).write_text(textwrap.dedent(text))
    return paths


def errors_of(paths: Paths) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_registry(paths)
    return info.value.errors


def one_error(tmp_path: Path, app_yaml: str) -> str:
    """The single error reported for a config.yml holding one app entry."""
    paths = setup(tmp_path, "apps:\n" + textwrap.indent(textwrap.dedent(app_yaml), "  "))
    errors = errors_of(paths)
    assert len(errors) == 1, errors
    return errors[0]


class TestFirstRun:
    def test_creates_commented_config_and_private_apps_dir(self, tmp_path: Path) -> None:
        """A first run writes config.yml with defaults and an empty apps.d/ (0700)."""
        paths = Paths.resolve(tmp_path / "new")
        assert ensure_config(paths) is True
        assert paths.config_file.read_text() == DEFAULT_CONFIG
        assert stat.S_IMODE(os.stat(paths.apps_dir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(paths.config_dir).st_mode) == 0o700
        assert ensure_config(paths) is False

    def test_default_config_loads_with_zero_apps(self, tmp_path: Path) -> None:
        """The generated config is valid, and zero apps is a valid registry."""
        paths = Paths.resolve(tmp_path / "new")
        ensure_config(paths)
        registry = load_registry(paths)
        assert registry.apps == ()
        assert registry.settings.leader_key == "ctrl+space"
        assert registry.settings.chord_timeout_ms == 2000
        assert registry.settings.api_port == 9876
        assert registry.warnings == ()

    def test_empty_file_is_all_defaults(self, tmp_path: Path) -> None:
        """An empty config.yml means the defaults."""
        assert load_registry(setup(tmp_path, "")).settings.log_level == "info"


class TestGoCompatibility:
    def test_go_manifest_loads(self, tmp_path: Path) -> None:
        """A config written for the Go orchestratr loads unchanged, defaults filled in."""
        paths = setup(
            tmp_path,
            """
            leader_key: ctrl+space
            chord_timeout_ms: 2000
            api_port: 9876
            log_level: info
            apps:
              - name: espansr
                chord: e
                command: espansr gui
                environment: wsl
                description: Text expander
                ready_cmd: curl -s localhost:1234
                ready_timeout_ms: 3000
              - name: notes
                chord: F5
                command: "obsidian | tee /dev/null"
                environment: "wsl:Ubuntu"
                detached: true
            """,
            **{"term.yaml": "name: term\nchord: t\ncommand: xterm\n"},
        )
        registry = load_registry(paths)
        assert [a.name for a in registry.apps] == ["espansr", "notes", "term"]
        espansr = registry.get("espansr")
        assert espansr is not None
        assert (espansr.ready_timeout_ms, espansr.restart, espansr.declared_in) == (
            3000, RestartPolicy.never, "config")
        assert registry.get("term").declared_in == "apps.d/term.yaml"  # type: ignore[union-attr]
        assert registry.by_chord("f5").name == "notes"  # type: ignore[union-attr]

    def test_our_fields(self, tmp_path: Path) -> None:
        """restart, delays, autostart, cwd and env structure into their types."""
        paths = setup(tmp_path, """
            apps:
              - name: svc
                command: run
                restart: on-failure
                restart_delay_ms: 0
                autostart: true
                stop_timeout_ms: 100
                cwd: /tmp
                env: {A: x, N: 1}
            """)
        spec = load_registry(paths).apps[0]
        assert spec.restart is RestartPolicy.on_failure
        assert (spec.restart_delay_ms, spec.autostart, spec.stop_timeout_ms) == (0, True, 100)
        assert dict(spec.env) == {"A": "x", "N": "1"}
        assert spec.chord is None


class TestAppErrors:
    """Each error names the file, the app and the field."""

    @pytest.mark.parametrize(
        ("entry", "expected"),
        [
            ("{name: a, chord: a}", "config.yml: apps[0] (a): command: required field missing"),
            ("{chord: a, command: x}", "config.yml: apps[0]: name: required field missing"),
            ("{name: a, command: x, ready_timeout_ms: soon}",
             "config.yml: apps[0] (a): ready_timeout_ms: expected an integer, got str 'soon'"),
            ("{name: a, command: x, detached: 'no'}",
             "config.yml: apps[0] (a): detached: expected true or false, got str 'no'"),
            ("{name: a, command: [x]}",
             "config.yml: apps[0] (a): command: expected a string, got list ['x']"),
            ("{name: a, command: x, env: [A]}",
             "config.yml: apps[0] (a): env: expected a mapping of variable names to values, got list"),
            ("{name: a, command: x, restart: sometimes}",
             "config.yml: apps[0] (a): restart: expected one of never, on-failure, always, got 'sometimes'"),
            ("{name: a, chord: '?', command: x}", "config.yml: apps[0] (a): chord: chord '?' is reserved"),
            ("{name: a, chord: space, command: x}",
             "config.yml: apps[0] (a): chord: chord 'space' is reserved"),
            ("{name: a, chord: ctrl+a, command: x}",
             "config.yml: apps[0] (a): chord: chord 'ctrl+a' is not one character or a known key name"),
            ("{name: a, chord: f13, command: x}",
             "config.yml: apps[0] (a): chord: chord 'f13' is not one character"),
            ("{name: ' padded', command: x}",
             "config.yml: apps[0] ( padded): name: ' padded' must be 1 to 128 characters"),
            ("{name: a/b, command: x}", "config.yml: apps[0] (a/b): name: 'a/b' must be 1 to"),
            ("{name: a, command: '  '}", "config.yml: apps[0] (a): command: must not be empty"),
            ("{name: a, command: x, environment: Native}",
             "config.yml: apps[0] (a): environment: 'Native' must be native, wsl or wsl:<distro>"),
            ("{name: a, command: x, environment: 'wsl:'}",
             "config.yml: apps[0] (a): environment: 'wsl:' must be native"),
            ("{name: a, command: x, stop_timeout_ms: -1}",
             "config.yml: apps[0] (a): stop_timeout_ms: must not be negative"),
            ("[not, a, mapping]", "config.yml: apps[0]: expected a mapping of app fields, got list"),
            ("{name: a, command: x, env: {'A=B': x}}",
             "config.yml: apps[0] (a): env.A=B: a variable name must be non-empty, without '='"),
            ('{name: a, command: "x\\0y"}',
             "config.yml: apps[0] (a): command: must not contain a NUL character"),
            ("{name: a, command: x, lease_secs: 0}",
             "config.yml: apps[0] (a): lease_secs: must be more than 0 and at most 86400"),
            ("{name: a, command: x, grace_secs: .nan}",
             "config.yml: apps[0] (a): grace_secs: must be from 0 to 86400"),
        ],
    )
    def test_error(self, tmp_path: Path, entry: str, expected: str) -> None:
        """A bad field is reported with its location."""
        assert one_error(tmp_path, f"- {entry}").startswith(expected)

    @pytest.mark.parametrize("chord", ["e", "E", "7", "+", "é", "f1", "F12", "tab", "pageup", "left"])
    def test_valid_chords(self, tmp_path: Path, chord: str) -> None:
        """One character or a known key name is a chord."""
        paths = setup(tmp_path, f"apps:\n  - {{name: a, chord: '{chord}', command: x}}\n")
        assert load_registry(paths).apps[0].chord == chord

    def test_all_errors_of_one_app_at_once(self, tmp_path: Path) -> None:
        """A type error does not hide the app's other problems."""
        paths = setup(tmp_path, "apps:\n  - {name: b/d, chord: '?', command: '', ready_timeout_ms: x}\n")
        fields = sorted(e.split(": ")[2] for e in errors_of(paths))
        assert fields == ["chord", "command", "name", "ready_timeout_ms"]

    def test_duplicate_name_and_chord_in_config(self, tmp_path: Path) -> None:
        """Names are unique; chords are unique regardless of case (unlike the Go orchestratr)."""
        paths = setup(tmp_path, """
            apps:
              - {name: a, chord: x, command: one}
              - {name: a, chord: y, command: two}
              - {name: b, chord: X, command: three}
            """)
        errors = errors_of(paths)
        assert "config.yml: duplicate name 'a': apps[0] (a) and apps[1] (a)" in errors
        assert "config.yml: duplicate chord 'x': apps[0] (a) and apps[2] (b)" in errors


class TestConfigErrors:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("apps: [\n", "config.yml: invalid YAML (line 2, column 1)"),
            ("- a\n", "config.yml: expected a mapping of settings, got list"),
            ("apps: {a: 1}\n", "config.yml: apps: expected a list of apps, got dict"),
            ("api_port: 70000\n", "config.yml: api_port: 70000 is not a TCP port"),
            ("chord_timeout_ms: fast\n", "config.yml: chord_timeout_ms: expected an integer"),
            ("log_level: loud\n", "config.yml: log_level: 'loud' must be one of"),
            ("chord_hint_ms: 2000\n", "config.yml: chord_hint_ms: must be from 0 (off) to "
                                      "less than chord_timeout_ms (2000)"),
            ("chord_hint_ms: -1\n", "config.yml: chord_hint_ms: must be from 0"),
        ],
    )
    def test_settings_error(self, tmp_path: Path, text: str, expected: str) -> None:
        """Broken settings fail the load with a message naming the field."""
        errors = errors_of(setup(tmp_path, text))
        assert any(e.startswith(expected) for e in errors), errors

    def test_missing_config_file(self, tmp_path: Path) -> None:
        paths = Paths.resolve(tmp_path)
        assert errors_of(paths) == ["config.yml: file not found"]

    def test_unknown_fields_are_warnings_with_a_hint(self, tmp_path: Path) -> None:
        """Unknown keys load (newer manifests) but are reported with the closest known field."""
        paths = setup(tmp_path, "leder_key: x\napps:\n  - {name: a, chrod: e, command: x}\n",
                      **{"b.yml": "name: b\ncommand: y\ncolour: red\n"})
        registry = load_registry(paths)
        assert [a.name for a in registry.apps] == ["a", "b"]
        assert registry.warnings == (
            "config.yml: leder_key: unknown field, ignored; did you mean 'leader_key'?",
            "config.yml: apps[0] (a): chrod: unknown field, ignored; did you mean 'chord'?",
            "apps.d/b.yml (b): colour: unknown field, ignored",
        )

    def test_error_also_carries_warnings(self, tmp_path: Path) -> None:
        """A failed load still reports the typo that probably caused it."""
        paths = setup(tmp_path, "apps:\n  - {name: a, commnd: x}\n")
        with pytest.raises(ConfigError) as info:
            load_registry(paths)
        assert "did you mean 'command'?" in info.value.warnings[0]
        assert "command: required field missing" in info.value.errors[0]
        assert str(info.value).startswith("config validation failed with 1 error(s):\n  - ")


class TestDropIns:
    def test_broken_file_is_skipped_and_blocks_nothing(self, tmp_path: Path) -> None:
        """A drop-in with bad YAML or a bad field is skipped; the others load."""
        paths = setup(
            tmp_path, "apps: []\n",
            **{"a.yml": "name: a\ncommand: x\n", "b.yml": "name: b\n  bad: [\n",
               "c.yml": "name: c\nchord: '?'\ncommand: x\n", "d.yml": "name: d\ncommand: y\n"},
        )
        registry = load_registry(paths)
        assert [a.name for a in registry.apps] == ["a", "d"]
        assert len(registry.skipped) == 2
        assert registry.skipped[0].startswith("apps.d/b.yml: invalid YAML")
        assert registry.skipped[1] == "apps.d/c.yml (c): chord: chord '?' is reserved (file skipped)"

    def test_config_wins_on_name_or_chord(self, tmp_path: Path) -> None:
        """A drop-in clashing with config.yml loses, with a warning naming both sources."""
        paths = setup(
            tmp_path, "apps:\n  - {name: a, chord: a, command: x}\n",
            **{"1.yml": "name: a\ncommand: y\n", "2.yml": "name: b\nchord: A\ncommand: y\n"},
        )
        registry = load_registry(paths)
        assert [(a.name, a.command) for a in registry.apps] == [("a", "x")]
        assert registry.warnings == (
            "apps.d/1.yml (a): name 'a' is also in config.yml; config.yml wins and this file is ignored",
            "apps.d/2.yml (b): chord 'A' is also in config.yml; config.yml wins and this file is ignored",
        )

    def test_clashing_drop_ins_are_both_rejected(self, tmp_path: Path) -> None:
        """Two drop-ins on one chord are both rejected with an error naming both files."""
        paths = setup(
            tmp_path, "apps: []\n",
            **{"1.yml": "name: a\nchord: q\ncommand: y\n", "2.yml": "name: b\nchord: Q\ncommand: y\n",
               "3.yml": "name: c\nchord: r\ncommand: y\n"},
        )
        registry = load_registry(paths)
        assert [a.name for a in registry.apps] == ["c"]
        assert registry.skipped == (
            "duplicate chord 'q': apps.d/1.yml (a) and apps.d/2.yml (b) (files skipped)",)

    def test_only_yaml_files_count(self, tmp_path: Path) -> None:
        """Editor backups, hidden files, other suffixes and subdirectories are ignored."""
        paths = setup(tmp_path, "apps: []\n", **{"a.YML": "name: a\ncommand: x\n",
                                                  ".b.yml": "name: b\ncommand: x\n",
                                                  "c.yml~": "name: c\ncommand: x\n",
                                                  "d.txt": "name: d\ncommand: x\n"})
        (paths.apps_dir / "sub.yml").mkdir()
        assert [a.name for a in load_registry(paths).apps] == ["a"]

    def test_broken_file_keeps_its_last_good_app(self, tmp_path: Path) -> None:
        """With the previous registry, a drop-in that breaks keeps the app it gave; the
        error is still reported. A file that never loaded, or is deleted, gives nothing."""
        paths = setup(tmp_path, "apps: []\n", **{"a.yml": "name: a\ncommand: x\n"})
        good = load_registry(paths)
        (paths.apps_dir / "a.yml").write_text("name: a\ncommand: [x\n")
        (paths.apps_dir / "b.yml").write_text("name: b\n")
        kept = load_registry(paths, previous=good)
        assert kept.apps == good.apps
        assert kept.skipped[0].startswith("apps.d/a.yml: invalid YAML")
        assert kept.skipped[0].endswith("(its last good version stays active)")
        assert kept.skipped[1].endswith("command: required field missing (file skipped)")
        assert load_registry(paths).apps == ()  # without a previous registry: skipped
        (paths.apps_dir / "a.yml").unlink()
        assert load_registry(paths, previous=kept).apps == ()


class TestGoManifests:
    """Values the Go orchestratr accepted load, with a warning saying what they mean."""

    def test_escape_chord_loads_with_a_warning(self, tmp_path: Path) -> None:
        paths = setup(tmp_path, "apps: []\n", **{"a.yml": "name: a\nchord: Escape\ncommand: x\n"})
        registry = load_registry(paths)
        assert registry.apps[0].chord == "Escape" and registry.skipped == ()
        assert registry.warnings == ("apps.d/a.yml (a): chord: chord 'Escape': Escape cancels "
                                     "the leader, so this chord can never fire (POST /trigger "
                                     "still launches the app)",)

    @pytest.mark.parametrize("value", [0, -1])
    def test_ready_timeout_of_zero_or_less_means_the_default(
        self, tmp_path: Path, value: int
    ) -> None:
        paths = setup(tmp_path, f"apps:\n  - {{name: a, command: x, ready_timeout_ms: {value}}}\n")
        registry = load_registry(paths)
        assert registry.apps[0].ready_timeout_ms == 5000
        assert registry.warnings == (f"config.yml: apps[0] (a): ready_timeout_ms: {value} means "
                                     "the default, 5000 ms (as it did for the Go orchestratr)",)


def test_broken_config_at_start_loads_the_drop_ins_alone(tmp_path: Path) -> None:
    """No last good registry to keep: default settings and the drop-ins."""
    paths = setup(tmp_path, "api_port: 1234\napps: [{name: a, command: x, chord: '?'}]\n",
                  **{"b.yml": "name: b\ncommand: y\n"})
    assert errors_of(paths)
    registry = load_without_config(paths)
    assert [a.name for a in registry.apps] == ["b"]
    assert registry.settings.api_port == 9876
