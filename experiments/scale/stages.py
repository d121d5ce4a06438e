"""Runs a command and reports each stage it announces: the time from one line of its standard
error to the next, and the largest resident memory sampled in between (every 50 ms from
/proc/PID/status), with the process's peak (VmHWM) at the end.

    python3 experiments/scale/stages.py NAME OUT_DIR -- COMMAND...

Writes the command's output to OUT_DIR/NAME.out and .err, and prints one line per stage:
`NAME  seconds  peak RSS  stage`. Exit status: the command's.
"""

import subprocess
import sys
import time


def status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return (int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return None


def main():
    name, out = sys.argv[1], sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1:]
    err_path = f"{out}/{name}.err"
    with open(f"{out}/{name}.out", "w") as o, open(err_path, "w") as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e)
        stages, seen = [], 0
        start = time.monotonic()
        label, stage_start, stage_peak, hwm = "start", start, 0, 0
        while p.poll() is None:
            s = status(p.pid)
            if s:
                stage_peak, hwm = max(stage_peak, s[0]), max(hwm, s[1])
            with open(err_path, errors="replace") as f:
                lines = [l.strip() for l in f.read().replace("\r", "\n").split("\n") if l.strip()]
            for line in lines[seen:]:
                now = time.monotonic()
                stages.append((now - stage_start, stage_peak, label))
                label, stage_start, stage_peak = line[:70], now, s[0] if s else 0
            seen = len(lines)
            time.sleep(0.05)
        stages.append((time.monotonic() - stage_start, stage_peak, label))
    for secs, peak, label in stages:
        print(f"{name:<8} {secs:8.1f} s  {peak / 2**20:7.0f} MB  {label}")
    print(f"{name:<8} {time.monotonic() - start:8.1f} s  {hwm / 2**20:7.0f} MB  peak (VmHWM) of the whole command")
    sys.exit(p.returncode)


if __name__ == "__main__":
    main()
