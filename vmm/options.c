// SPDX-License-Identifier: MIT
/*
 * imgvm's boot options: defaults, parser, --help text.  To add an option:
 * an OPT_ value, a line in boot_option_list (VALUE when it takes one,
 * REPEATABLE when it may be given more than once), a case in
 * boot_options_parse and its lines in boot_options_help.  VM definitions
 * (imgvm create/modify) then accept it too.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "vmm/machine.h"
#include "vmm/options.h"

enum {
	OPT_MEMORY = 256,
	OPT_CPUS,
	OPT_DISK,
	OPT_CDROM,
	OPT_BOOT,
	OPT_BIOS,
	OPT_SERIAL,
	OPT_FIRMWARE_LOG,
	OPT_NO_REBOOT,
	OPT_EJECT_ON_REBOOT,
	OPT_TIMEOUT,
	OPT_CONTROL,
	OPT_NET,
	OPT_PXE_ROM,
	OPT_SCREEN,
	OPT_POINTER,
	OPT_HELP,
};

#define V BOOT_OPTION_VALUE
#define R BOOT_OPTION_REPEATABLE
#define P BOOT_OPTION_PATH
const struct boot_option_info boot_option_list[] = {
	{ "memory", V, OPT_MEMORY },
	{ "cpus", V, OPT_CPUS },
	{ "disk", V | R | P, OPT_DISK },
	{ "cdrom", V | P, OPT_CDROM },
	{ "boot", V, OPT_BOOT },
	{ "bios", V | P, OPT_BIOS },
	{ "serial", V, OPT_SERIAL },
	{ "firmware-log", V | P, OPT_FIRMWARE_LOG },
	{ "no-reboot", 0, OPT_NO_REBOOT },
	{ "eject-on-reboot", 0, OPT_EJECT_ON_REBOOT },
	{ "timeout", V, OPT_TIMEOUT },
	{ "control", V | P, OPT_CONTROL },
	{ "net", V, OPT_NET },
	{ "pxe-rom", V | P, OPT_PXE_ROM },
	{ "vga", V, OPT_SCREEN },
	{ "vram", V, OPT_SCREEN },
	{ "display", V, OPT_SCREEN },
	{ "vnc", V, OPT_SCREEN },
	{ "vnc-password-file", V | P, OPT_SCREEN },
	{ "screenshot", V | P, OPT_SCREEN },
	{ "screenshot-on-exit", V | P, OPT_SCREEN },
	{ "pointer", V, OPT_POINTER },
	{ NULL, 0, 0 },
};
#undef V
#undef R
#undef P

#define BOOT_OPTION_MAX 64

const struct boot_option_info *boot_option_find(const char *name)
{
	for (const struct boot_option_info *o = boot_option_list; o->name; o++)
		if (!strcmp(o->name, name))
			return o;
	return NULL;
}

void boot_options_help(FILE *out)
{
	fprintf(out,
		"Options of 'boot':\n"
		"  --memory SIZE        guest RAM, e.g. 512M, 2G (default 512M; "
		"a bare number is MiB)\n"
		"  --cpus N             vCPUs (default 1)\n"
		"  --disk FILE[,format=FMT][,readonly]\n"
		"                       SATA disk, any image libimg opens (raw, "
		"vdi, vhd, vhdx,\n"
		"                       vmdk, qcow2; local or rbd:/nbd:// "
		"names; format probed\n"
		"                       unless given); up to 5: the first\n"
		"                       on AHCI port 0, the next on ports 2-5\n"
		"  --cdrom ISO          ATAPI CD-ROM on AHCI port 1 "
		"(read-only)\n"
		"  --boot cdrom|disk|net\n"
		"                       boot device tried first (default: cdrom "
		"when --cdrom\n"
		"                       is given, else disk; net: PXE with "
		"iPXE)\n"
		"  --net user[,OPTION...] | tap,ifname=NAME[,OPTION...]\n"
		"                       a virtio-net card.  user: NAT through "
		"libslirp,\n"
		"                       guest 10.0.2.15 by DHCP, gateway 10.0.2.2, "
		"DNS 10.0.2.3;\n"
		"                       options restrict=on (no traffic out but "
		"the forwards),\n"
		"                       hostfwd=tcp:[ADDR]:PORT-[GADDR]:GPORT "
		"(repeatable),\n"
		"                       guestfwd=tcp:GADDR:GPORT-cmd:COMMAND or "
		"-unix:PATH,\n"
		"                       tftp=DIR, bootfile=FILE.  Both: "
		"mac=XX:XX:XX:XX:XX:XX,\n"
		"                       model=virtio (1af4:1000, default) or "
		"virtio-modern\n"
		"                       (1af4:1041)\n"
		"  --pxe-rom FILE       option ROM for --boot net (default %s)\n"
		"  --bios PATH          firmware image (default %s)\n"
		"  --serial stdio|file:PATH|unix:PATH\n"
		"                       where the serial console goes (default "
		"stdio;\n"
		"                       on a terminal Ctrl-A x quits)\n"
		"  --firmware-log FILE  write the firmware's debug log (port "
		"0x402) to FILE\n"
		"  --no-reboot          end with status 0 when the guest "
		"reboots\n"
		"  --eject-on-reboot    empty the CD-ROM tray at the first guest "
		"reboot\n"
		"  --timeout SECONDS    stop the guest after SECONDS (status "
		"124)\n"
		"  --control PATH       serve the control protocol (JSON lines, "
		"see imgvm(1))\n"
		"                       on the Unix socket PATH (mode 0600)\n"
		"%s"
		"  --pointer tablet|ps2 the viewers' pointer: a USB tablet "
		"(absolute, on a\n"
		"                       UHCI controller; the default with a "
		"screen) or the\n"
		"                       PS/2 mouse (relative; the default "
		"without)\n",
		DEFAULT_PXE_ROM, DEFAULT_BIOS, screen_options_help);
}

int boot_options_parse_size(const char *text, uint64_t *out)
{
	char *end;
	unsigned long long value;
	uint64_t unit = 1ull << 20;

	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || end == text || *text == '-')
		return -EINVAL;
	if (*end) {
		switch (*end) {
		case 'k':
		case 'K':
			unit = 1ull << 10;
			break;
		case 'm':
		case 'M':
			unit = 1ull << 20;
			break;
		case 'g':
		case 'G':
			unit = 1ull << 30;
			break;
		default:
			return -EINVAL;
		}
		end++;
		if (*end && strcasecmp(end, "iB") && strcasecmp(end, "B"))
			return -EINVAL;
	}
	if (value > UINT64_MAX / unit)
		return -ERANGE;
	*out = value * unit;
	return 0;
}

static int parse_unsigned(const char *text, unsigned max, unsigned *out)
{
	char *end;
	unsigned long value;

	errno = 0;
	value = strtoul(text, &end, 10);
	if (errno || end == text || *end || value > max)
		return -EINVAL;
	*out = value;
	return 0;
}

static int parse_disk(struct boot_options *opt, char *spec)
{
	char *save = NULL;
	char *part = strtok_r(spec, ",", &save);
	struct disk_option *d = &opt->disk[opt->ndisks];

	if (opt->ndisks == AHCI_MAX_DISKS) {
		fprintf(stderr,
			"imgvm: at most %d --disk (AHCI ports 0 and 2-5)\n",
			AHCI_MAX_DISKS);
		return -EINVAL;
	}
	if (!part) {
		fprintf(stderr, "imgvm: --disk needs a file name\n");
		return -EINVAL;
	}
	for (unsigned i = 0; i < opt->ndisks; i++) {
		if (!strcmp(opt->disk[i].path, part)) {
			fprintf(stderr, "imgvm: %s is given as --disk twice\n",
				part);
			return -EINVAL;
		}
	}
	d->path = part;
	opt->ndisks++;
	while ((part = strtok_r(NULL, ",", &save))) {
		if (!strncmp(part, "format=", 7) && part[7]) {
			d->format = part + 7;
		} else if (!strcmp(part, "readonly")) {
			d->read_only = true;
		} else {
			fprintf(stderr,
				"imgvm: --disk: unknown option '%s' (format=FMT, "
				"readonly)\n",
				part);
			return -EINVAL;
		}
	}
	return 0;
}

int boot_options_parse(int argc, char **argv, struct boot_options *opt)
{
	struct option options[BOOT_OPTION_MAX + 2];
	size_t n = 0;
	int c, index = 0;

	for (const struct boot_option_info *o = boot_option_list;
	     o->name && n < BOOT_OPTION_MAX; o++, n++)
		options[n] = (struct option){
			o->name,
			(o->flags & BOOT_OPTION_VALUE) ? required_argument
						       : no_argument,
			NULL,
			o->id,
		};
	options[n++] = (struct option){ "help", no_argument, NULL, OPT_HELP };
	options[n] = (struct option){ NULL, 0, NULL, 0 };

	memset(opt, 0, sizeof(*opt));
	opt->memory = DEFAULT_MEMORY;
	opt->cpus = 1;
	opt->bios = DEFAULT_BIOS;
	opt->serial = "stdio";
	optind =
		0; /* GNU getopt: start over (the parser runs more than once) */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options, &index)) != -1) {
		switch (c) {
		case OPT_MEMORY:
			if (boot_options_parse_size(optarg, &opt->memory)) {
				fprintf(stderr,
					"imgvm: --memory: bad size '%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_CPUS:
			if (parse_unsigned(optarg, VMM_MAX_CPUS, &opt->cpus) ||
			    !opt->cpus) {
				fprintf(stderr,
					"imgvm: --cpus must be 1 to %d\n",
					VMM_MAX_CPUS);
				return -EINVAL;
			}
			break;
		case OPT_DISK:
			if (parse_disk(opt, optarg))
				return -EINVAL;
			break;
		case OPT_CDROM:
			opt->cdrom = optarg;
			break;
		case OPT_BOOT:
			if (strcmp(optarg, "cdrom") && strcmp(optarg, "disk") &&
			    strcmp(optarg, "net")) {
				fprintf(stderr, "imgvm: --boot must be cdrom, "
						"disk or net\n");
				return -EINVAL;
			}
			opt->boot = optarg;
			break;
		case OPT_BIOS:
			opt->bios = optarg;
			break;
		case OPT_SERIAL:
			if (strcmp(optarg, "stdio") &&
			    (strncmp(optarg, "file:", 5) || !optarg[5]) &&
			    (strncmp(optarg, "unix:", 5) || !optarg[5])) {
				fprintf(stderr,
					"imgvm: --serial must be stdio, "
					"file:PATH or unix:PATH\n");
				return -EINVAL;
			}
			opt->serial = optarg;
			break;
		case OPT_FIRMWARE_LOG:
			opt->firmware_log = optarg;
			break;
		case OPT_NO_REBOOT:
			opt->no_reboot = true;
			break;
		case OPT_EJECT_ON_REBOOT:
			opt->eject_on_reboot = true;
			break;
		case OPT_TIMEOUT:
			if (parse_unsigned(optarg, 30 * 24 * 3600,
					   &opt->timeout)) {
				fprintf(stderr,
					"imgvm: --timeout: bad number of "
					"seconds '%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_CONTROL:
			opt->control = optarg;
			break;
		case OPT_NET: {
			char err[256];

			if (opt->net) {
				fprintf(stderr, "imgvm: one --net only\n");
				return -EINVAL;
			}
			if (net_config_parse(&opt->net_config, optarg, err,
					     sizeof(err))) {
				fprintf(stderr, "imgvm: --net: %s\n", err);
				return -EINVAL;
			}
			opt->net = optarg;
			break;
		}
		case OPT_PXE_ROM:
			opt->pxe_rom = optarg;
			break;
		case OPT_SCREEN:
			if (screen_option(&opt->screen, options[index].name,
					  optarg))
				return -EINVAL;
			break;
		case OPT_POINTER:
			if (strcmp(optarg, "tablet") && strcmp(optarg, "ps2")) {
				fprintf(stderr,
					"imgvm: --pointer must be tablet or "
					"ps2\n");
				return -EINVAL;
			}
			opt->pointer = optarg;
			break;
		case OPT_HELP:
			return BOOT_OPTIONS_HELP;
		default:
			fprintf(stderr,
				"imgvm: unknown or incomplete option '%s' (see "
				"imgvm --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "imgvm: unexpected argument '%s'\n",
			argv[optind]);
		return -EINVAL;
	}
	if (opt->boot && !strcmp(opt->boot, "cdrom") && !opt->cdrom) {
		fprintf(stderr, "imgvm: --boot cdrom needs --cdrom ISO\n");
		return -EINVAL;
	}
	if (opt->boot && !strcmp(opt->boot, "net") && !opt->net) {
		fprintf(stderr, "imgvm: --boot net needs --net\n");
		return -EINVAL;
	}
	if (opt->boot && !strcmp(opt->boot, "disk") && !opt->ndisks) {
		fprintf(stderr, "imgvm: --boot disk needs --disk FILE\n");
		return -EINVAL;
	}
	return screen_options_check(&opt->screen);
}

bool boot_options_tablet(const struct boot_options *opt)
{
	if (opt->pointer)
		return !strcmp(opt->pointer, "tablet");
	return opt->screen.vga;
}
