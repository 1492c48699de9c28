// SPDX-License-Identifier: MIT
/*
 * imgvm --help.
 */
#include <stdio.h>

#include "vmm/cmd.h"

void imgvm_usage(FILE *out)
{
	fprintf(out,
		"Usage: imgvm boot [OPTIONS]\n"
		"       imgvm --help | --version\n"
		"\n"
		"Boot a PC (KVM, SeaBIOS, AHCI SATA disk and CD-ROM, serial "
		"console).\n"
		"\n");
	boot_options_help(out);
	fprintf(out,
		"\n"
		"Exit status: 0 guest powered off (or rebooted with "
		"--no-reboot);\n"
		"1 bad options or setup failure; 2 the guest stopped on an "
		"error (triple\n"
		"fault, KVM internal error, stuck device); 3 this host's KVM "
		"cannot run\n"
		"firmware; 124 timeout; 128+N killed by signal N.\n");
}
