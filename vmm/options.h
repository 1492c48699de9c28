/* SPDX-License-Identifier: MIT */
/*
 * imgvm's boot options: what a machine is made of (RAM, CPUs, disks,
 * CD-ROM, firmware, console, ...), their defaults, their parser and their
 * --help text.  `imgvm boot` parses them from its command line; a VM
 * definition stores the same options as data and runs them through the same
 * parser, so an option added here is known to both.
 */
#ifndef IMGVM_OPTIONS_H
#define IMGVM_OPTIONS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vmm/devices/ahci.h"
#include "vmm/net/net.h"
#include "vmm/display/display.h"

#define DEFAULT_BIOS "/usr/share/seabios/bios-256k.bin"
#define DEFAULT_MEMORY (512ull << 20)
/* iPXE for virtio-net (Debian ipxe-qemu), run by SeaBIOS for --boot net */
#define DEFAULT_PXE_ROM "/usr/lib/ipxe/qemu/pxe-virtio.rom"

struct boot_options {
	uint64_t memory;
	unsigned cpus;
	/* --disk, in the order given: disk 0 on AHCI port 0 (the one
	 * --boot disk boots), the others on ports 2, 3, ... */
	unsigned ndisks;
	struct disk_option {
		const char *path;
		const char *format;
		bool read_only;
	} disk[AHCI_MAX_DISKS];
	const char *cdrom;
	const char *boot; /* "cdrom", "disk", "net" or NULL */
	const char *net;  /* --net as given, or NULL; parsed: */
	struct net_config net_config;
	const char *pxe_rom;
	const char *bios;
	const char *serial;
	const char *firmware_log;
	bool no_reboot;
	bool eject_on_reboot;
	unsigned timeout;
	const char *control;	      /* Unix socket of the control protocol */
	const char *pointer;	      /* "tablet", "ps2" or NULL (default) */
	struct screen_options screen; /* VGA, VNC, screenshots */
};

/* What the parser knows about each option, for the VM definitions: whether
 * it takes a value and whether it may be given more than once. */
enum boot_option_flags {
	BOOT_OPTION_VALUE = 1 << 0,
	BOOT_OPTION_REPEATABLE = 1 << 1,
	/* the value, up to its first comma, names a file: a definition
	 * stores it as an absolute path */
	BOOT_OPTION_PATH = 1 << 2,
};

struct boot_option_info {
	const char *name; /* without the leading "--" */
	unsigned flags;
	int id; /* getopt's value for it (OPT_* in options.c) */
};

/* The boot options, ended by an entry with a NULL name ("help" is not in
 * it). */
extern const struct boot_option_info boot_option_list[];
const struct boot_option_info *boot_option_find(const char *name);

/* Parses argv[1..argc-1] (argv[0] is the command's name) into opt after
 * setting the defaults.  The strings in opt point into argv (or into
 * strtok'd copies of it: argv's strings are modified).  Errors as one line
 * on stderr; returns 0, -EINVAL, or BOOT_OPTIONS_HELP for --help. */
#define BOOT_OPTIONS_HELP 1
int boot_options_parse(int argc, char **argv, struct boot_options *opt);

/* Sizes: a number with an optional K, M, G suffix (KiB, MiB, GiB); a bare
 * number is MiB. */
int boot_options_parse_size(const char *text, uint64_t *out);

/* Whether the machine gets the USB tablet: --pointer, by default when it
 * has a screen. */
bool boot_options_tablet(const struct boot_options *opt);

/* The "Options of 'boot':" section of --help. */
void boot_options_help(FILE *out);

#endif
