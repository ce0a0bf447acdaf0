"""host_step(follow=True): the step's journal is streamed while it runs (the hivesync
build), each line once, and the follower is gone when the step ends; fake systemctl /
systemd-run / journalctl on PATH (the e2e build runs the real ones)."""

import subprocess
import time

from deploys.parts.host_steps import host_step

FAKES = {
    "systemctl": "#!/bin/sh\ncase \"$1\" in is-active) exit 3 ;; esac\nexit 0\n",
    # the unit writes two lines while it runs, a third just before it ends
    "systemd-run": "#!/bin/sh\necho \"systemd-run $*\" >> \"$LOG\"\necho step-line-3 >> \"$JOURNAL\"\n"
                   "exit \"${STEP_RC:-0}\"\n",
    # -f: what the journal has, then whatever is appended (like journalctl -f), until killed
    "journalctl": "#!/bin/sh\necho \"journalctl $*\" >> \"$LOG\"\n"
                  "case \" $* \" in *' -f '*) exec /usr/bin/tail -n +1 -f \"$JOURNAL\" ;; esac\ncat \"$JOURNAL\"\n",
    "logger": "#!/bin/sh\nexit 0\n",
}


def run(tmp_path, follow, journal_text="step-line-1\nstep-line-2\n", **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in FAKES.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    journal = tmp_path / "journal"
    journal.write_text(journal_text)
    command = host_step("hivesync-build", ["sh", "/opt/hivesync/build/.image-build.sh"], "docker build",
                        timeout_s=60, follow=follow).get_raw_value()
    full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "log"), "JOURNAL": str(journal), **env}
    started = time.monotonic()
    proc = subprocess.run(["sh", "-c", command], env=full, capture_output=True, text=True, timeout=30)
    return proc, (tmp_path / "log").read_text(), time.monotonic() - started


def test_follow_streams_every_line_once_and_stops_the_follower(tmp_path):
    proc, log, took = run(tmp_path, follow=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["step-line-1", "step-line-2", "step-line-3"]
    assert "journalctl -q -o cat -f -u hivesync-build.service --since" in log
    # started before the step; --since its start time: lines written before it attaches are not lost
    assert took < 10
    follower = subprocess.run(["pgrep", "-f", f"tail -n \\+1 -f {tmp_path}/journal"], capture_output=True)
    assert follower.returncode == 1  # nothing left following


def test_follow_keeps_the_steps_status(tmp_path):
    proc, _, _ = run(tmp_path, follow=True, STEP_RC="3")
    assert proc.returncode == 3
    assert "step-line-3" in proc.stdout and "failed (exit 3)" in proc.stderr


def test_without_follow_the_journal_is_printed_once_at_the_end(tmp_path):
    proc, log, _ = run(tmp_path, follow=False)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["step-line-1", "step-line-2", "step-line-3"]
    assert " -f " not in log


def test_the_image_build_passes_every_line_of_docker_build_on_as_it_comes(tmp_path):
    """The build script used to keep only `tail -n 60` of `docker build`, printed when it
    ended: now every line goes straight to the unit's journal (and a failure's cause with it)."""
    from deploys.parts.source_image import _BUILD
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\ncase \"$1 $2\" in\n"
                                    "  'build --pull=false') for i in $(seq 1 150); do echo \"step $i\"; done\n"
                                    "      echo 'ERROR: pip install failed: no such package' >&2; exit 1 ;;\n"
                                    "esac\nexit 1\n")
    (bin_dir / "docker").chmod(0o755)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/Dockerfile").write_text("FROM x\n")
    subprocess.run(["tar", "-cf", str(tmp_path / "s.tar"), "-C", str(tmp_path / "src"), "."], check=True)
    (tmp_path / "build.sh").write_text(_BUILD)
    done = subprocess.run(["sh", str(tmp_path / "build.sh"), str(tmp_path / "s.tar"), str(tmp_path / "dir"),
                           "hivesync-backend:src-new", "hivesync-backend", "3", "Dockerfile"],
                          capture_output=True, text=True, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
    assert done.returncode == 1 and "docker build of hivesync-backend:src-new failed" in done.stderr
    lines = done.stdout.splitlines()
    assert [f"step {i}" for i in range(1, 151)] == [line for line in lines if line.startswith("step ")]
    assert "ERROR: pip install failed: no such package" in lines


def test_follow_streams_a_log_file_step_too(tmp_path):
    """A step whose output goes to a log file (releases' user scope): the file is followed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fakes = {**FAKES, "systemd-run": "#!/bin/sh\nprintf 'log-line-1\\nlog-line-2\\n' >> \"$STEPLOG\"\nsleep 0.3\n"
                                     "echo log-line-3 >> \"$STEPLOG\"\nexit 0\n"}
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "step.log"
    command = host_step("hivesync-build", ["true"], "x", timeout_s=60, log=str(log), follow=True).get_raw_value()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(tmp_path / "calls"), "JOURNAL": str(tmp_path / "j"),
           "STEPLOG": str(log)}
    proc = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["log-line-1", "log-line-2", "log-line-3"]


NOISE = "hivesync-build.service: Failed to open /run/systemd/transient/hivesync-build.service: No such file or directory"


def test_systemds_transient_file_noise_is_not_shown(tmp_path):
    """systemd logs it under the unit when the unit is queried before it exists: not the step's output."""
    for follow in (True, False):
        case = tmp_path / str(follow)
        case.mkdir()
        proc, _, _ = run(case, follow=follow, journal_text=f"{NOISE}\nstep-line-1\n")
        assert proc.returncode == 0, proc.stderr
        assert NOISE not in proc.stdout
        assert "step-line-1" in proc.stdout and "step-line-3" in proc.stdout
