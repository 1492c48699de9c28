// SPDX-License-Identifier: MIT
/*
 * imgvm --help.
 */
#include <stdio.h>

#include "vmm/cmd.h"

void imgvm_usage(FILE *out)
{
	fputs("Usage: imgvm boot [OPTIONS]\n"
	      "       imgvm create NAME [OPTIONS]       define a VM "
	      "(--disk new:FMT:SIZE makes a disk)\n"
	      "       imgvm modify NAME [OPTIONS] [--unset OPTION]   "
	      "(--OPTION none removes)\n"
	      "       imgvm list | show NAME | delete NAME [--delete-disks]\n"
	      "       imgvm start NAME [--detach] [OPTIONS]\n"
	      "       imgvm status|eject|powerbutton|reset|pause|resume|stop "
	      "NAME [--json]\n"
	      "       imgvm insert NAME ISO | screenshot NAME FILE.png | "
	      "sendkeys NAME TEXT\n"
	      "       imgvm snapshot NAME create|revert|delete TAG | snapshot "
	      "NAME list\n"
	      "       imgvm export NAME FILE.ova | import FILE.ova [NAME] "
	      "[--format FMT]\n"
	      "       imgvm --help | --version\n"
	      "\n"
	      "Boot a PC (KVM, SeaBIOS, AHCI SATA disk and CD-ROM, serial "
	      "console).\n"
	      "Named VMs live in $IMGVM_HOME (default $XDG_DATA_HOME/imgvm, "
	      "i.e.\n"
	      "~/.local/share/imgvm) and take the options of 'boot'; a "
	      "running one is\n"
	      "driven through its control socket (NAME may be that socket's "
	      "path).\n"
	      "\n",
	      out);
	boot_options_help(out);
	fputs("\n"
	      "Exit status: 0 guest powered off (or rebooted with "
	      "--no-reboot);\n"
	      "1 bad options or setup failure; 2 the guest stopped on an "
	      "error (triple\n"
	      "fault, KVM internal error, stuck device); 3 this host's KVM "
	      "cannot run\n"
	      "firmware; 124 timeout; 128+N killed by signal N.\n",
	      out);
}
