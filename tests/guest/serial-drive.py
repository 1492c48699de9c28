#!/usr/bin/env python3
"""serial-drive.py: run a VM whose stdin/stdout is the guest's serial console,
record everything it prints, and type text when a pattern shows up.

usage: serial-drive.py --log FILE [--timeout SECONDS] [--until REGEX]
                       [--send REGEX TEXT]... -- COMMAND [ARGS...]

Each --send fires once, in the order given: when REGEX has appeared in the
output (ANSI escapes and carriage returns removed), TEXT is typed one
character at a time.  TEXT may use \\r \\n \\t \\e (escape) and \\xNN.
Exit status: 0 when --until matched (without --until: when COMMAND exited
with 0); 1 on timeout or when COMMAND ended first; the VM is stopped then.
Milestones (pattern seen, text typed, end) are printed with their time.
"""
import argparse
import codecs
import os
import re
import select
import subprocess
import sys
import time

ANSI = re.compile(rb'\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r')


def unescape(text):
    text = text.replace('\\e', '\\x1b')
    return codecs.decode(text, 'unicode_escape').encode('latin-1')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--log', required=True)
    ap.add_argument('--timeout', type=float, default=300)
    ap.add_argument('--until')
    ap.add_argument('--send', nargs=2, action='append', default=[],
                    metavar=('REGEX', 'TEXT'))
    ap.add_argument('--char-delay', type=float, default=0.05)
    ap.add_argument('command', nargs=argparse.REMAINDER)
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ['--'] else args.command
    if not command:
        ap.error('no command given')

    start = time.monotonic()

    def note(msg):
        print(f'[{time.monotonic() - start:7.2f}s] {msg}', flush=True)

    pending = [(re.compile(rx.encode()), unescape(text), rx)
               for rx, text in args.send]
    until = re.compile(args.until.encode()) if args.until else None
    vm = subprocess.Popen(command, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = b''
    matched = False
    with open(args.log, 'wb') as log:
        while True:
            if time.monotonic() - start > args.timeout:
                note('timeout')
                break
            ready, _, _ = select.select([vm.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(vm.stdout.fileno(), 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                seen += chunk
            text = ANSI.sub(b'', seen)
            while pending and pending[0][0].search(text):
                _, keys, rx = pending.pop(0)
                note(f'saw /{rx}/, typing {keys!r}')
                for ch in keys:
                    vm.stdin.write(bytes([ch]))
                    vm.stdin.flush()
                    time.sleep(args.char_delay)
            if until and until.search(text):
                note(f'saw /{args.until}/')
                matched = True
                break
            if not ready and vm.poll() is not None:
                break
    if vm.poll() is None:
        vm.terminate()
        try:
            vm.wait(5)
        except subprocess.TimeoutExpired:
            vm.kill()
            vm.wait()
    if until is None:
        matched = vm.returncode == 0
    note(f'end: status {vm.returncode}, {"ok" if matched else "FAILED"}, '
         f'log {args.log}')
    return 0 if matched else 1


if __name__ == '__main__':
    sys.exit(main())
