/* SPDX-License-Identifier: MIT */
/* The KVM core's stop reports: where a vCPU was at the exit before a triple
 * fault (the registers KVM copies with KVM_CAP_SYNC_REGS), and what the
 * report says when KVM could not copy them. */
#include <criterion/criterion.h>
#include <string.h>

#include "vmm/machine.h"

static struct vmm_cpu_snapshot long_mode_snapshot(void)
{
	struct vmm_cpu_snapshot s;

	memset(&s, 0, sizeof(s));
	s.valid = true;
	s.exit_reason = KVM_EXIT_MMIO;
	s.exits = 123456;
	s.sregs_exit = 123456;
	s.regs.rip = 0xffffffff81234567ull;
	s.regs.rsp = 0xffffc90000013e80ull;
	s.regs.rflags = 0x246;
	s.sregs.cs.selector = 0x10;
	s.sregs.cr0 = 0x80050033;
	s.sregs.cr3 = 0x2a0c000;
	s.sregs.cr4 = 0x3506f0;
	s.sregs.efer = 0xd01;
	return s;
}

TestSuite(vmm_kvm);

Test(vmm_kvm, report_names_the_registers_and_the_exit)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	char buf[400];

	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect(strstr(buf, "RIP 0xffffffff81234567"), "%s", buf);
	cr_expect(strstr(buf, "CS 0x10 "), "%s", buf);
	cr_expect(strstr(buf, "CR0 0x80050033"), "%s", buf);
	cr_expect(strstr(buf, "CR3 0x2a0c000"), "%s", buf);
	cr_expect(strstr(buf, "RSP 0xffffc90000013e80"), "%s", buf);
	cr_expect(strstr(buf, "(MMIO, exit 123456)"), "%s", buf);
	cr_expect(!strstr(buf, "exception"), "%s", buf);
	cr_expect(!strstr(buf, "(at exit"), "%s", buf);
}

/* The segment and control registers are copied at every 32nd exit only:
 * the report says which exit they are from when it is an older one. */
Test(vmm_kvm, report_dates_older_control_registers)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	char buf[400];

	s.sregs_exit = 123440;
	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect(strstr(buf, "EFER 0xd01 (at exit 123440)"), "%s", buf);
}

Test(vmm_kvm, report_names_an_exception_in_delivery)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	char buf[400];

	s.exit_reason = KVM_EXIT_IO;
	s.events.exception.injected = 1;
	s.events.exception.nr = 14;
	s.events.exception.has_error_code = 1;
	s.events.exception.error_code = 2;
	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect(strstr(buf, "(port I/O,"), "%s", buf);
	cr_expect(strstr(buf, "exception 14 being delivered (error 0x2)"), "%s",
		  buf);
}

Test(vmm_kvm, unknown_exit_reason_as_a_number)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	char buf[400];

	s.exit_reason = 4242;
	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect(strstr(buf, "(4242, exit"), "%s", buf);
}

/* Without KVM_CAP_SYNC_REGS there is no copy: the report must say so
 * rather than print zeros as if they were registers. */
Test(vmm_kvm, no_copy_says_so)
{
	struct vmm_cpu_snapshot s;
	char buf[400];

	memset(&s, 0, sizeof(s));
	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect(strstr(buf, "no registers from before it"), "%s", buf);
	cr_expect(strstr(buf, "KVM_CAP_SYNC_REGS"), "%s", buf);
	cr_expect(!strstr(buf, "RIP"), "%s", buf);
}

/* The whole report fits the stop message with room for its prefix. */
Test(vmm_kvm, report_fits_the_stop_reason)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	struct vmm *vm = NULL;
	char buf[400];

	memset(&s.regs, 0xff, sizeof(s.regs));
	memset(&s.sregs, 0xff, sizeof(s.sregs));
	s.events.exception.pending = 1;
	s.events.exception.nr = 255;
	s.events.exception.has_error_code = 1;
	s.events.exception.error_code = 0xffffffffu;
	s.exits = ~0ull;
	s.exit_reason = ~0u;
	vmm_describe_cpu(buf, sizeof(buf), &s);
	cr_expect_lt(strlen(buf), sizeof(buf) - 1, "%zu: %s", strlen(buf), buf);
	cr_expect_gt(sizeof(vm->stop_reason), strlen(buf) + 64);
}

/* A timeout's report per vCPU: exits, the age of the last, where it was,
 * and whether the vCPU was in the guest or in imgvm's own code. */
Test(vmm_kvm, timeout_brief)
{
	struct vmm_cpu_snapshot s = long_mode_snapshot();
	char buf[160];

	vmm_describe_vcpu_brief(buf, sizeof(buf), 1, &s, 77, 12.25, false);
	cr_expect_str_eq(buf,
			 "vCPU 1: 77 exits, the last 12.2 s before (MMIO at "
			 "0010:ffffffff81234567), in imgvm's device code");
	s.valid = false;
	vmm_describe_vcpu_brief(buf, sizeof(buf), 0, &s, 0, 0, true);
	cr_expect_str_eq(buf, "vCPU 0: 0 exits, the last 0.0 s before, in "
			      "the guest");
}
