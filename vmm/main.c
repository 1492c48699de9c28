// SPDX-License-Identifier: MIT
/*
 * imgvm: boot a disk image (or install from an ISO onto one) under KVM
 * with SeaBIOS, an AHCI SATA disk and CD-ROM, and a serial console.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "img.h"
#include "vmm/machine.h"

#include "vmm/devices/ahci.h"
#include "vmm/display/display.h"

#define DEFAULT_BIOS "/usr/share/seabios/bios-256k.bin"
#define DEFAULT_MEMORY (512ull << 20)
#define AHCI_SLOT 3
#define VGA_SLOT 2
#define SERIAL_PORT 0x3f8
#define SERIAL_IRQ 4
/* seconds SeaBIOS waits after "No bootable device" before rebooting */
#define BOOT_FAIL_WAIT 5

/* fw_cfg legacy items (QEMU docs/specs/fw_cfg.rst) */
#define FW_CFG_RAM_SIZE 0x03
#define FW_CFG_NB_CPUS 0x05
#define FW_CFG_NUMA 0x0d
#define FW_CFG_BOOT_MENU 0x0e
#define FW_CFG_MAX_CPUS 0x0f

/* Exit statuses (also in imgvm(1)) */
#define EXIT_USAGE 1
#define EXIT_GUEST_ERROR 2
#define EXIT_NO_KVM 3

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
	const char *boot; /* "cdrom", "disk" or NULL */
	const char *bios;
	const char *serial;
	const char *firmware_log;
	bool no_reboot;
	bool eject_on_reboot;
	unsigned timeout;
	struct screen_options screen;
};

struct machine {
	struct boot_options opt;
	struct vmm *vm;
	struct img *disk[AHCI_MAX_DISKS];
	struct console *console;
	struct uart *uart;
	struct cmos *cmos;
	struct i8042 *kbc;
	struct piix *piix;
	struct debug_ports *debug;
	int firmware_log_fd;
	struct outbuf *firmware_log;
	struct ahci *ahci;
	struct screen screen;
	bool ejected;
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: imgvm boot [OPTIONS]\n"
		"       imgvm --help | --version\n"
		"\n"
		"Boot a PC (KVM, SeaBIOS, AHCI SATA disk and CD-ROM, serial "
		"console).\n"
		"\n"
		"Options of 'boot':\n"
		"  --memory SIZE        guest RAM, e.g. 512M, 2G (default 512M; "
		"a bare number is MiB)\n"
		"  --cpus N             vCPUs (default 1)\n"
		"  --disk FILE[,format=FMT][,readonly]\n"
		"                       SATA disk, any image libimg opens (raw, "
		"vdi, vhd,\n"
		"                       vmdk; format probed unless given); up "
		"to 5: the first\n"
		"                       on AHCI port 0, the next on ports 2-5\n"
		"  --cdrom ISO          ATAPI CD-ROM on AHCI port 1 "
		"(read-only)\n"
		"  --boot cdrom|disk    boot device tried first (default: cdrom "
		"when --cdrom\n"
		"                       is given, else disk)\n"
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
		"%s"
		"\n"
		"Exit status: 0 guest powered off (or rebooted with "
		"--no-reboot);\n"
		"1 bad options or setup failure; 2 the guest stopped on an "
		"error (triple\n"
		"fault, KVM internal error, stuck device); 3 this host's KVM "
		"cannot run\n"
		"firmware; 124 timeout; 128+N killed by signal N.\n",
		DEFAULT_BIOS, screen_options_help);
}

static int parse_size(const char *text, uint64_t *out)
{
	char *end;
	unsigned long long value;
	uint64_t unit = 1ull << 20;

	errno = 0;
	value = strtoull(text, &end, 10);
	if (errno || end == text)
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
	OPT_SCREEN,
	OPT_HELP,
};

static int parse_boot_options(int argc, char **argv, struct boot_options *opt)
{
	static const struct option options[] = {
		{ "memory", required_argument, NULL, OPT_MEMORY },
		{ "cpus", required_argument, NULL, OPT_CPUS },
		{ "disk", required_argument, NULL, OPT_DISK },
		{ "cdrom", required_argument, NULL, OPT_CDROM },
		{ "boot", required_argument, NULL, OPT_BOOT },
		{ "bios", required_argument, NULL, OPT_BIOS },
		{ "serial", required_argument, NULL, OPT_SERIAL },
		{ "firmware-log", required_argument, NULL, OPT_FIRMWARE_LOG },
		{ "no-reboot", no_argument, NULL, OPT_NO_REBOOT },
		{ "eject-on-reboot", no_argument, NULL, OPT_EJECT_ON_REBOOT },
		{ "timeout", required_argument, NULL, OPT_TIMEOUT },
		{ "vga", required_argument, NULL, OPT_SCREEN },
		{ "vram", required_argument, NULL, OPT_SCREEN },
		{ "display", required_argument, NULL, OPT_SCREEN },
		{ "vnc", required_argument, NULL, OPT_SCREEN },
		{ "vnc-password-file", required_argument, NULL, OPT_SCREEN },
		{ "screenshot", required_argument, NULL, OPT_SCREEN },
		{ "screenshot-on-exit", required_argument, NULL, OPT_SCREEN },
		{ "help", no_argument, NULL, OPT_HELP },
		{ NULL, 0, NULL, 0 },
	};
	int c, index;

	opt->memory = DEFAULT_MEMORY;
	opt->cpus = 1;
	opt->bios = DEFAULT_BIOS;
	opt->serial = "stdio";
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options, &index)) != -1) {
		switch (c) {
		case OPT_MEMORY:
			if (parse_size(optarg, &opt->memory)) {
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
			if (strcmp(optarg, "cdrom") && strcmp(optarg, "disk")) {
				fprintf(stderr,
					"imgvm: --boot must be cdrom or disk\n");
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
		case OPT_SCREEN:
			if (screen_option(&opt->screen, options[index].name,
					  optarg))
				return -EINVAL;
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
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
	if (opt->boot && !strcmp(opt->boot, "disk") && !opt->ndisks) {
		fprintf(stderr, "imgvm: --boot disk needs --disk FILE\n");
		return -EINVAL;
	}
	return screen_options_check(&opt->screen);
}

/* ---- firmware configuration -----------------------------------------*/

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = v >> (8 * i);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = v >> (8 * i);
}

/* etc/e820: packed {u64 address, u64 length, u32 type} entries */
static int add_e820(struct fw_cfg *fc, const struct vmm *vm)
{
	uint8_t table[2 * 20];
	size_t len = 20;

	put_le64(table, 0);
	put_le64(table + 8, vm->low_ram);
	put_le32(table + 16, 1);
	if (vm->high_ram) {
		put_le64(table + 20, VMM_4GIB);
		put_le64(table + 28, vm->high_ram);
		put_le32(table + 36, 1);
		len += 20;
	}
	return fw_cfg_add_file(fc, "etc/e820", table, len);
}

/* SeaBIOS matches "/pci@i0cf8/<any>@<slot>/drive@<port>/disk@0" for an
 * AHCI port.  The first disk and the CD-ROM in the order --boot asks for,
 * then the other disks. */
static int add_bootorder(struct fw_cfg *fc, const struct boot_options *opt)
{
	char order[512];
	bool cdrom_first = opt->boot ? !strcmp(opt->boot, "cdrom")
				     : opt->cdrom != NULL;
	unsigned ports[AHCI_MAX_DISKS + 1], nports = 0;
	size_t n = 0;

	ports[nports++] = cdrom_first ? 1 : ahci_disk_port(0);
	ports[nports++] = cdrom_first ? ahci_disk_port(0) : 1;
	for (unsigned i = 1; i < opt->ndisks; i++)
		ports[nports++] = ahci_disk_port(i);
	/* one path per line, no newline after the last */
	for (unsigned i = 0; i < nports; i++)
		n += (size_t)snprintf(order + n, sizeof(order) - n,
				      "%s/pci@i0cf8/sata@%x/drive@%u/disk@0",
				      i ? "\n" : "", AHCI_SLOT, ports[i]);
	/* SeaBIOS wants the list NUL-terminated */
	return fw_cfg_add_file(fc, "bootorder", order, n + 1);
}

static int setup_fw_cfg(struct machine *m)
{
	struct vmm *vm = m->vm;
	struct fw_cfg *fc = fw_cfg_create(vm);
	uint8_t u64[8], u16[2], u32[4];
	uint8_t zero[8] = { 0 };

	if (!fc)
		return -ENOMEM;
	put_le64(u64, vm->ram_size);
	u16[0] = vm->ncpus;
	u16[1] = vm->ncpus >> 8;
	put_le32(u32, BOOT_FAIL_WAIT * 1000); /* milliseconds */
	{
		uint8_t sercon[2] = { SERIAL_PORT & 0xff, SERIAL_PORT >> 8 };

		if (fw_cfg_add_item(fc, FW_CFG_RAM_SIZE, u64, 8) ||
		    fw_cfg_add_item(fc, FW_CFG_NB_CPUS, u16, 2) ||
		    fw_cfg_add_item(fc, FW_CFG_MAX_CPUS, u16, 2) ||
		    fw_cfg_add_item(fc, FW_CFG_NUMA, zero, 8) ||
		    fw_cfg_add_item(fc, FW_CFG_BOOT_MENU, zero, 2) ||
		    add_e820(fc, vm) || add_bootorder(fc, &m->opt) ||
		    fw_cfg_add_file(fc, "etc/sercon-port", sercon, 2) ||
		    fw_cfg_add_file(fc, "etc/boot-fail-wait", u32, 4))
			return -ENOMEM;
	}
	return 0;
}

/* ---- machine -----------------------------------------------------------*/

static void on_reboot(void *opaque)
{
	struct machine *m = opaque;

	if (m->opt.eject_on_reboot && !m->ejected) {
		m->ejected = true;
		if (m->ahci)
			ahci_eject_cdrom(m->ahci);
	}
}

static int open_disks(struct machine *m)
{
	for (unsigned i = 0; i < m->opt.ndisks; i++) {
		const struct disk_option *d = &m->opt.disk[i];
		struct img_open_options opts = {
			.format = d->format,
			.flags = d->read_only ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
		};
		char err[IMG_ERRMSG_MAX];
		int ret =
			img_open(&m->disk[i], d->path, &opts, err, sizeof(err));

		if (ret) {
			fprintf(stderr, "imgvm: %s\n", err);
			return ret;
		}
	}
	return 0;
}

static int setup_storage(struct machine *m)
{
	struct ahci_config cfg = { .cdrom_path = m->opt.cdrom };
	char err[256] = "";

	for (unsigned i = 0; i < m->opt.ndisks; i++) {
		cfg.disk[i] = m->disk[i];
		cfg.disk_read_only[i] = m->opt.disk[i].read_only;
	}
	if (!m->opt.ndisks && !m->opt.cdrom)
		return 0;
	m->ahci = ahci_create(m->vm, AHCI_SLOT << 3, &cfg, err, sizeof(err));
	if (!m->ahci) {
		fprintf(stderr, "imgvm: %s\n",
			err[0] ? err : "cannot create the AHCI controller");
		return -EINVAL;
	}
	return 0;
}

static int setup_machine(struct machine *m)
{
	char err[256];
	struct vmm_config cfg = {
		.ram_size = m->opt.memory,
		.ncpus = m->opt.cpus,
		.bios_path = m->opt.bios,
	};

	m->vm = vmm_create(&cfg, err, sizeof(err));
	if (!m->vm) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	m->console = console_open(m->opt.serial, err, sizeof(err));
	if (!m->console) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	if (m->opt.firmware_log) {
		m->firmware_log_fd =
			open(m->opt.firmware_log,
			     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (m->firmware_log_fd < 0) {
			fprintf(stderr, "imgvm: --firmware-log: %s: %s\n",
				m->opt.firmware_log, strerror(errno));
			return -errno;
		}
		m->firmware_log = outbuf_create(m->firmware_log_fd);
		if (!m->firmware_log)
			goto nomem;
	}
	if (setup_fw_cfg(m))
		goto nomem;
	m->cmos = cmos_create(m->vm);
	m->uart = uart_create(m->vm, SERIAL_PORT, SERIAL_IRQ,
			      console_output(m->console));
	m->kbc = i8042_create(m->vm);
	m->piix = piix_create(m->vm);
	m->debug = debug_ports_create(m->vm, m->firmware_log);
	if (!m->cmos || !m->uart || !m->kbc || !m->piix || !m->debug)
		goto nomem;
	/* THR: one exit per console byte instead of two (the LSR read that
	 * precedes the next byte still exits and delivers it) */
	vmm_coalesce_pio(m->vm, SERIAL_PORT, 1);
	if (open_disks(m) || setup_storage(m))
		return -EINVAL;
	if (screen_setup(&m->screen, &m->opt.screen, m->vm, m->vm->fw_cfg,
			 m->kbc, VGA_SLOT, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	if (console_attach(m->console, m->vm, m->uart, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	return 0;
nomem:
	fprintf(stderr, "imgvm: cannot set up the platform devices\n");
	return -ENOMEM;
}

static int teardown_machine(struct machine *m)
{
	int ret = 0;
	bool uart_in_use;

	screen_teardown(&m->screen, &m->opt.screen);
	uart_in_use = console_close(m->console);
	if (m->ahci)
		ahci_destroy(m->ahci);
	for (unsigned i = 0; i < m->opt.ndisks; i++) {
		int r = m->disk[i] ? img_close(m->disk[i]) : 0;

		if (r) {
			fprintf(stderr, "imgvm: %s: closing the disk: %s\n",
				m->opt.disk[i].path, strerror(-r));
			ret = r;
		}
	}
	cmos_destroy(m->cmos);
	/* with a console input thread (blocked in read) the UART stays */
	if (!uart_in_use)
		uart_destroy(m->uart);
	i8042_destroy(m->kbc);
	piix_destroy(m->piix);
	debug_ports_destroy(m->debug);
	if (m->vm)
		fw_cfg_destroy(m->vm->fw_cfg);
	outbuf_destroy(m->firmware_log);
	if (m->firmware_log_fd >= 0)
		close(m->firmware_log_fd);
	return ret;
}

/* SIGINT/SIGTERM/SIGHUP stop the guest cleanly, so the disk is flushed.
 * SIGUSR2 takes a --screenshot (SIGUSR1 kicks vCPUs out of KVM_RUN). */
static void *signal_thread(void *opaque)
{
	struct machine *m = opaque;
	struct vmm *vm = m->vm;
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	while (sigwait(&set, &sig) == 0 && sig == SIGUSR2)
		screen_screenshot(&m->screen, &m->opt.screen);
	vmm_request_stop(vm, 128 + sig, "terminated by signal %d", sig);
	/* A second signal means: now, without waiting for the guest. */
	while (sigwait(&set, &sig) == 0 && sig == SIGUSR2)
		;
	fprintf(stderr, "imgvm: terminated by signal %d\n", sig);
	_exit(128 + sig);
	return NULL;
}

static int cmd_boot(int argc, char **argv)
{
	struct machine m = { .firmware_log_fd = -1 };
	const char *limitation = vmm_kvm_limitation();
	pthread_t sig_thread;
	sigset_t set;
	int status;

	if (parse_boot_options(argc, argv, &m.opt))
		return EXIT_USAGE;
	if (limitation && !getenv("IMGVM_FORCE_KVM")) {
		fprintf(stderr, "imgvm: %s\n", limitation);
		return EXIT_NO_KVM;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	if (setup_machine(&m)) {
		teardown_machine(&m);
		vmm_destroy(m.vm);
		return EXIT_USAGE;
	}
	pthread_create(&sig_thread, NULL, signal_thread, &m);
	pthread_detach(sig_thread);
	status = vmm_run(m.vm, m.opt.no_reboot, m.opt.timeout, on_reboot, &m);
	if (status)
		fprintf(stderr, "imgvm: %s\n",
			m.vm->stop_reason[0] ? m.vm->stop_reason
					     : "the guest stopped");
	if (teardown_machine(&m) && !status)
		status = EXIT_GUEST_ERROR;
	vmm_destroy(m.vm);
	return status;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("imgvm %s\n", IMG_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "boot"))
		return cmd_boot(argc - 1, argv + 1);
	fprintf(stderr, "imgvm: unknown command '%s' (see imgvm --help)\n",
		argv[1]);
	return EXIT_USAGE;
}
