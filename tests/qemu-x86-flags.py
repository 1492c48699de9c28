#!/usr/bin/env python3
"""Print the hidden interrupt state of a CPU of a running QEMU TCG process
(x86-64 target, QEMU 7.2 layout): what the monitor and gdbstub do not show.

    qemu-x86-flags.py PID MONITOR-FILE

MONITOR-FILE holds the monitor's "info cpus" and "info registers" output
for that CPU, taken while QEMU was stopped ("stop"), so that nothing moves.
It prints one line:
  - CPUX86State.hflags and hflags2: whether the CPU runs its host or a
    guest, and the flags that gate interrupts under AMD-V (GIF, the host's
    saved IF, "NMI in progress", V_INTR masking);
  - CPUState.interrupt_request: the requests the CPU thread acts on (HARD:
    a maskable interrupt to take, POLL: ask the local APIC, NMI, ...).  A
    halted CPU sleeps until one of them is set.

Debian's QEMU has no symbols, so both structures are found in the
process's memory by what they hold.  CPUX86State starts with the general
registers and RIP that "info registers" printed (regs[16], eip, eflags,
cc_dst, cc_src, cc_src2, cc_op, df, hflags, hflags2).  CPUState lies a few
KiB before it, in the same X86CPU object; it is found by the vCPU's thread
id ("info cpus"), followed by the halt condition's pointer and the
thread's flags (thread_id, running, has_waiter, halt_cond, thread_kicked,
created, stop, stopped, start_powered_off, unplug, crash_occurred,
exit_request, in_exclusive_context, cflags_next_tb, interrupt_request).
Exit status: 0 found, 1 not found, 2 usage.
"""

import re
import struct
import sys

# target/i386/cpu.h
HF_PE = 1 << 7
HF_LMA = 1 << 14
HF_CS64 = 1 << 15
HF_GUEST = 1 << 21
HF2_NAMES = ["GIF", "HIF", "NMI_MASK", "VINTR", "SMM_INSIDE_NMI", "MPX_PR",
             "NPT", "IGNNE", "VGIF"]
# include/hw/core/cpu.h and target/i386/cpu.h
IRQ_NAMES = {0x2: "HARD", 0x4: "EXITTB", 0x8: "EXT_0", 0x10: "POLL",
             0x20: "HALT", 0x40: "SMI", 0x80: "DEBUG", 0x100: "VIRQ",
             0x200: "NMI", 0x400: "INIT", 0x800: "SIPI", 0x1000: "MCE",
             0x2000: "TPR"}

ORDER = ["RAX", "RCX", "RDX", "RBX", "RSP", "RBP", "RSI", "RDI",
         "R8", "R9", "R10", "R11", "R12", "R13", "R14", "R15", "RIP"]
OFF_HFLAGS = 8 * 17 + 8 * 4 + 4 + 4
OFF_HFLAGS2 = OFF_HFLAGS + 4
OFF_INTERRUPT_REQUEST = 32  # from thread_id
CPUSTATE_WINDOW = 256 << 10  # how far before the registers to look


def parse_monitor(text):
    """(regular expression for CPUX86State's first bytes, whether the
    CPU was in 64-bit mode, the vCPU's thread id).  Outside 64-bit mode
    (an L2 guest in 32-bit or real mode) the monitor prints EAX..EDI and
    EIP: the low halves of eight registers and of RIP, R8-R15 not at all."""
    tid = re.search(r"thread_id=(\d+)", text)
    tid = int(tid.group(1)) if tid else None
    regs = dict(re.findall(r"\b(R[A-Z0-9]+) ?=([0-9a-f]{16})\b", text))
    if all(r in regs for r in ORDER):
        pattern = b"".join(struct.pack("<Q", int(regs[r], 16))
                           for r in ORDER)
        return re.escape(pattern), True, tid
    regs = dict(re.findall(r"\b(E[A-Z]+) ?=([0-9a-f]{8})\b", text))
    short = ["E" + r[1:] for r in ORDER[:8]] + ["EIP"]
    missing = [r for r in short if r not in regs]
    if missing:
        raise ValueError("no " + ", ".join(missing) + " in the registers")
    low = [re.escape(struct.pack("<I", int(regs[r], 16))) + b"...."
           for r in short]
    return b"".join(low[:8]) + b"." * 64 + low[8], False, tid


def regions(pid):
    """Writable private mappings up to 512 MiB (QEMU's heap; guest RAM is
    one larger mapping), smallest first."""
    out = []
    with open("/proc/%d/maps" % pid) as maps:
        for line in maps:
            f = line.split()
            if not f[1].startswith("rw") or f[1][3] != "p":
                continue
            if len(f) > 5 and f[5].startswith("/"):
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            if hi - lo <= 512 << 20:
                out.append((hi - lo, lo))
    return sorted(out)


def find_env(mem, pid, pattern, long_mode):
    """(address, hflags, hflags2, region base, region bytes) of each copy
    of the registers followed by flags of the mode they were printed in."""
    found = []
    long_flags = HF_PE | HF_LMA | HF_CS64
    regex = re.compile(pattern, re.DOTALL)
    for size, lo in regions(pid):
        try:
            mem.seek(lo)
            data = mem.read(size)
        except OSError:
            continue
        # (search, not finditer: matches may overlap)
        m = regex.search(data)
        while m:
            at = m.start()
            if at % 8 == 0 and at + OFF_HFLAGS2 + 4 <= len(data):
                hflags, hflags2 = struct.unpack_from("<II", data,
                                                     at + OFF_HFLAGS)
                if (hflags & long_flags == long_flags if long_mode
                        else not hflags & HF_CS64):
                    found.append((lo + at, hflags, hflags2, lo, data))
            m = regex.search(data, at + 1)
    return found


def find_interrupt_request(env_at, base, data, tid):
    """CPUState.interrupt_request of the vCPU whose thread is tid, from the
    bytes before its CPUX86State, or None."""
    key = struct.pack("<i", tid)
    end = env_at - base
    at = data.rfind(key, max(0, end - CPUSTATE_WINDOW), end)
    while at >= 0:
        flags = data[at + 16:at + 25]
        halt_cond = struct.unpack_from("<Q", data, at + 8)[0]
        if (at % 8 == 0 and halt_cond and halt_cond % 8 == 0 and
                all(b in (0, 1) for b in data[at + 4:at + 6] + flags) and
                data[at + 17] == 1):
            return struct.unpack_from("<I", data,
                                      at + OFF_INTERRUPT_REQUEST)[0]
        at = data.rfind(key, max(0, end - CPUSTATE_WINDOW), at)
    return None


def names(value, table):
    out = [table[b] for b in sorted(table) if value & b]
    return "0x%x (%s)" % (value, " ".join(out) or "none")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: qemu-x86-flags.py PID MONITOR-FILE\n")
        return 2
    pid = int(argv[1])
    with open(argv[2]) as f:
        try:
            pattern, long_mode, tid = parse_monitor(f.read())
        except ValueError as e:
            print("no CPU state in the monitor's output: %s" % e)
            return 1
    try:
        with open("/proc/%d/mem" % pid, "rb", buffering=0) as mem:
            found = find_env(mem, pid, pattern, long_mode)
    except OSError as e:
        print("cannot read QEMU's memory: %s" % e.strerror)
        return 1
    if len(found) != 1:
        print("CPU state not found (%d copies of the registers with the "
              "flags of %s mode)" % (len(found),
                                     "64-bit" if long_mode else "a 32- or 16-bit"))
        return 1
    env_at, hflags, hflags2, base, data = found[0]
    hf2 = {1 << i: n for i, n in enumerate(HF2_NAMES)}
    line = "hflags 0x%x, hflags2 %s, the CPU in %s" % (
        hflags, names(hflags2, hf2),
        "a guest" if hflags & HF_GUEST else "its host")
    irq = find_interrupt_request(env_at, base, data, tid) if tid else None
    if irq is None:
        line += "; interrupt_request not found"
    else:
        line += "; interrupt_request " + names(irq, IRQ_NAMES)
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
