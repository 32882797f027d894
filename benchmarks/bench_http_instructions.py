"""Instructions of a worker's process per hot request over HTTP, counted where the machine's
load does not change them (issue 19): ``dandelion serve`` (process engine, caching off)
runs under ``valgrind --tool=callgrind``; a client registers ``bench_http.py``'s function,
sends ``--warm-up`` requests, zeroes the counters (``callgrind_control --zero``), sends
``N`` more and dumps them: the dump's total over ``N`` is the worker's instructions per
request, all its threads (not its zygotes' and sandboxes', other processes).  ``--before
PYTHON`` also counts a worker run by another interpreter (a checkout's virtualenv), after.

    python benchmarks/bench_http_instructions.py [--requests 200] [--before PYTHON]

valgrind 3.19 knows no ``pidfd_send_signal``, with which the ``process`` engine ends a
sandbox: the worker would meet ``ENOSYS`` at every sandbox's end, log its traceback (some
2 M instructions a request, varying) and leave the sandbox running.  The measured worker
gets a ``sitecustomize`` that kills by the pid the pidfd names instead.  A data copy of
``n`` bytes counts as about ``n`` instructions (``rep movsb``, one per byte).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_http  # noqa: E402  (the function, its input and the client's connection)

#: What the measured worker runs first: pidfd_send_signal falls back to kill(pid).
PIDFD_FALLBACK = '''
import os, signal
_send = signal.pidfd_send_signal
def _pidfd_send_signal(pidfd, sig, siginfo=None, flags=0):
    try:
        return _send(pidfd, sig, siginfo, flags)
    except OSError as e:
        if e.errno != 38:  # ENOSYS: valgrind's
            raise
    with open(f"/proc/self/fdinfo/{pidfd}") as f:
        pid = next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
    if pid > 0:
        os.kill(pid, sig)
signal.pidfd_send_signal = _pidfd_send_signal
'''


def count(python: str, requests: int, warm_up: int) -> float:
    """Instructions of the worker run by ``python`` per hot request."""
    work = Path(tempfile.mkdtemp(prefix="bench_http_instructions"))
    (work / "site").mkdir()
    (work / "site" / "sitecustomize.py").write_text(PIDFD_FALLBACK)
    port = bench_http.free_port()
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(work / "site"))
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/out.%p", python, "-m",
         "dandelion", "serve", "--port", str(port), "--workers", "1", "--engine", "process",
         "--cache", "off", "--result-cache", "0", "--no-access-log", "--state-dir",
         str(work / "state")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600  # (a worker starts in a minute or two under valgrind)
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the worker did not start under valgrind") from None
                time.sleep(1)
        source = bench_http.SOURCE.format(name="mmt0", index=0)
        urllib.request.urlopen(urllib.request.Request(
            f"{url}/v1/functions", data=json.dumps({"source": source}).encode(),
            headers={"Content-Type": "application/json"}), timeout=300).read()
        conn = bench_http.connection(url)
        system = bench_http.System("Dandelion", url, bench_http.matrix(), True, proc.pid)

        def one() -> None:
            conn.request("POST", "/v1/functions/mmt0/invoke", body=system.body,
                         headers=system.headers)
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 200, answer.status

        for _ in range(warm_up):
            one()
        time.sleep(5)  # (what the warm-up set off in the background ends)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(requests):
            one()
        subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        proc.terminate()
        proc.wait(120)
    for dump in work.glob(f"out.{proc.pid}.*"):
        text = dump.read_text(errors="replace")
        if "measured" in text[:2000]:
            total = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
            if total:
                return int(total.group(1)) / requests
    raise RuntimeError(f"no dump of the measured requests in {work}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests counted")
    parser.add_argument("--warm-up", type=int, default=150, help="requests before counting")
    parser.add_argument("--before", metavar="PYTHON",
                        help="also count a worker run by this interpreter")
    args = parser.parse_args()
    runs = [("this tree", sys.executable)] + ([("before", args.before)] if args.before else [])
    for label, python in runs:
        per = count(python, args.requests, args.warm_up)
        print(f"{label}: {per / 1e6:.3f} M instructions of the worker per hot request "
              f"({args.requests} requests)", flush=True)


if __name__ == "__main__":
    main()
