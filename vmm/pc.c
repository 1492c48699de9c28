// SPDX-License-Identifier: MIT
/*
 * The PC imgvm assembles from its boot options (see pc.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img.h"
#include "vmm/control.h"
#include "vmm/pc.h"

#include "vmm/devices/ahci.h"
#include "vmm/devices/usb.h"
#include "vmm/devices/virtio_net.h"
#include "vmm/net/net.h"

#define AHCI_SLOT 3
#define NET_SLOT 4
#define PXE_ROM_MAX (256u << 10)
#define VGA_SLOT 2
/* the USB function of the PIIX3, as on a real i440FX board (00:01.2) */
#define USB_SLOT 1
#define USB_FUNCTION 2
#define TABLET_PORT 0
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
	bool net_first = opt->boot && !strcmp(opt->boot, "net");
	unsigned ports[AHCI_MAX_DISKS + 1], nports = 0;
	size_t n = 0;

	ports[nports++] = cdrom_first ? 1 : ahci_disk_port(0);
	ports[nports++] = cdrom_first ? ahci_disk_port(0) : 1;
	for (unsigned i = 1; i < opt->ndisks; i++)
		ports[nports++] = ahci_disk_port(i);
	/* one path per line, no newline after the last; the NIC's boot
	 * entry vector (from its option ROM) is matched by slot */
	if (net_first)
		n += (size_t)snprintf(order, sizeof(order),
				      "/pci@i0cf8/ethernet@%x", NET_SLOT);
	for (unsigned i = 0; i < nports; i++)
		n += (size_t)snprintf(order + n, sizeof(order) - n,
				      "%s/pci@i0cf8/sata@%x/drive@%u/disk@0",
				      i || net_first ? "\n" : "", AHCI_SLOT,
				      ports[i]);
	/* SeaBIOS wants the list NUL-terminated */
	return fw_cfg_add_file(fc, "bootorder", order, n + 1);
}

static int setup_fw_cfg(struct pc *pc)
{
	struct vmm *vm = pc->vm;
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
		    add_e820(fc, vm) || add_bootorder(fc, &pc->opt) ||
		    fw_cfg_add_file(fc, "etc/sercon-port", sercon, 2) ||
		    fw_cfg_add_file(fc, "etc/boot-fail-wait", u32, 4))
			return -ENOMEM;
	}
	return 0;
}

/* ---- network -----------------------------------------------------------*/

/* SeaBIOS runs a fw_cfg file named pciVVVV,DDDD.rom as the option ROM of
 * that PCI function: iPXE then offers a boot entry for the card. */
static int add_pxe_rom(struct fw_cfg *fc, const char *path)
{
	uint8_t *rom = malloc(PXE_ROM_MAX);
	ssize_t got = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = -EINVAL;

	if (fd >= 0 && rom)
		got = read(fd, rom, PXE_ROM_MAX);
	if (fd < 0 || got < 0) {
		fprintf(stderr, "imgvm: --boot net: %s: %s\n", path,
			strerror(errno));
	} else if (got < 512 || rom[0] != 0x55 || rom[1] != 0xaa ||
		   (size_t)got == PXE_ROM_MAX) {
		fprintf(stderr,
			"imgvm: --boot net: %s is not a PCI option ROM of at "
			"most %u KiB\n",
			path, PXE_ROM_MAX >> 10);
	} else {
		char name[32];

		snprintf(name, sizeof(name), "pci1af4,%04x.rom",
			 VIRTIO_NET_PCI_ID_TRANSITIONAL);
		ret = fw_cfg_add_file(fc, name, rom, got);
	}
	if (fd >= 0)
		close(fd);
	free(rom);
	return ret;
}

static int setup_network(struct pc *pc)
{
	const struct net_config *cfg = &pc->opt.net_config;
	char err[256] = "";

	if (!pc->opt.net)
		return 0;
	if (pc->opt.boot && !strcmp(pc->opt.boot, "net")) {
		if (cfg->modern_only) {
			fprintf(stderr, "imgvm: --boot net needs the "
					"transitional card (model=virtio)\n");
			return -EINVAL;
		}
		if (add_pxe_rom(pc->vm->fw_cfg, pc->opt.pxe_rom
							? pc->opt.pxe_rom
							: DEFAULT_PXE_ROM))
			return -EINVAL;
	}
	pc->net_backend = net_backend_open(cfg, err, sizeof(err));
	if (!pc->net_backend) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	pc->net = virtio_net_create(pc->vm, NET_SLOT, cfg->mac,
				    cfg->modern_only, pc->net_backend, err,
				    sizeof(err));
	if (!pc->net) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	return 0;
}

/* ---- storage -----------------------------------------------------------*/

static int open_disks(struct pc *pc)
{
	for (unsigned i = 0; i < pc->opt.ndisks; i++) {
		const struct disk_option *d = &pc->opt.disk[i];
		struct img_open_options opts = {
			.format = d->format,
			.flags = d->read_only ? IMG_OPEN_RDONLY : IMG_OPEN_RDWR,
		};
		char err[IMG_ERRMSG_MAX];
		int ret = img_open(&pc->disk[i], d->path, &opts, err,
				   sizeof(err));

		if (ret) {
			fprintf(stderr, "imgvm: %s\n", err);
			return ret;
		}
	}
	return 0;
}

static int setup_storage(struct pc *pc)
{
	struct ahci_config cfg = { .cdrom_path = pc->opt.cdrom };
	char err[256] = "";

	for (unsigned i = 0; i < pc->opt.ndisks; i++) {
		cfg.disk[i] = pc->disk[i];
		cfg.disk_read_only[i] = pc->opt.disk[i].read_only;
	}
	if (!pc->opt.ndisks && !pc->opt.cdrom)
		return 0;
	pc->ahci = ahci_create(pc->vm, AHCI_SLOT << 3, &cfg, err, sizeof(err));
	if (!pc->ahci) {
		fprintf(stderr, "imgvm: %s\n",
			err[0] ? err : "cannot create the AHCI controller");
		return -EINVAL;
	}
	return 0;
}

/* ---- the pointer ---------------------------------------------------------*/

static int setup_tablet(struct pc *pc)
{
	char err[256] = "";

	if (!boot_options_tablet(&pc->opt))
		return 0;
	pc->tablet = usb_tablet_create();
	if (!pc->tablet) {
		fprintf(stderr, "imgvm: out of memory for the USB tablet\n");
		return -ENOMEM;
	}
	pc->uhci =
		uhci_create(pc->vm, USB_SLOT, USB_FUNCTION, err, sizeof(err));
	if (!pc->uhci) {
		fprintf(stderr, "imgvm: USB controller: %s\n", err);
		return -EINVAL;
	}
	return uhci_attach(pc->uhci, TABLET_PORT,
			   usb_tablet_device(pc->tablet));
}

/* ---- the machine -------------------------------------------------------*/

int pc_setup(struct pc *pc)
{
	char err[256];
	struct vmm_config cfg = {
		.ram_size = pc->opt.memory,
		.ncpus = pc->opt.cpus,
		.bios_path = pc->opt.bios,
	};

	pc->vm = vmm_create(&cfg, err, sizeof(err));
	if (!pc->vm) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	pc->console = console_open(pc->opt.serial, err, sizeof(err));
	if (!pc->console) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	if (pc->opt.firmware_log) {
		pc->firmware_log_fd =
			open(pc->opt.firmware_log,
			     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (pc->firmware_log_fd < 0) {
			fprintf(stderr, "imgvm: --firmware-log: %s: %s\n",
				pc->opt.firmware_log, strerror(errno));
			return -errno;
		}
		pc->firmware_log = outbuf_create(pc->firmware_log_fd);
		if (!pc->firmware_log)
			goto nomem;
	}
	if (setup_fw_cfg(pc))
		goto nomem;
	pc->cmos = cmos_create(pc->vm);
	pc->uart = uart_create(pc->vm, SERIAL_PORT, SERIAL_IRQ,
			       console_output(pc->console));
	pc->kbc = i8042_create(pc->vm);
	pc->piix = piix_create(pc->vm);
	pc->debug = debug_ports_create(pc->vm, pc->firmware_log);
	if (!pc->cmos || !pc->uart || !pc->kbc || !pc->piix || !pc->debug)
		goto nomem;
	/* THR: one exit per console byte instead of two (the LSR read that
	 * precedes the next byte still exits and delivers it) */
	vmm_coalesce_pio(pc->vm, SERIAL_PORT, 1);
	if (open_disks(pc) || setup_storage(pc) || setup_network(pc) ||
	    setup_tablet(pc))
		return -EINVAL;
	if (screen_setup(&pc->screen, &pc->opt.screen, pc->vm, pc->vm->fw_cfg,
			 pc->kbc, pc->tablet, pc->piix, VGA_SLOT, err,
			 sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	if (console_attach(pc->console, pc->vm, pc->uart, err, sizeof(err))) {
		fprintf(stderr, "imgvm: %s\n", err);
		return -EINVAL;
	}
	if (pc->opt.control) {
		pc->control =
			control_start(pc->opt.control, pc, err, sizeof(err));
		if (!pc->control) {
			fprintf(stderr, "imgvm: %s\n", err);
			return -EINVAL;
		}
	}
	return 0;
nomem:
	fprintf(stderr, "imgvm: cannot set up the platform devices\n");
	return -ENOMEM;
}

static void on_reboot(void *opaque)
{
	struct pc *pc = opaque;

	if (pc->opt.eject_on_reboot && !pc->ejected) {
		pc->ejected = true;
		if (pc->ahci)
			ahci_eject_cdrom(pc->ahci);
	}
}

int pc_run(struct pc *pc)
{
	return vmm_run(pc->vm, pc->opt.no_reboot, pc->opt.timeout, on_reboot,
		       pc);
}

int pc_teardown(struct pc *pc)
{
	int ret = 0;
	bool uart_in_use;

	/* no request may reach a device being taken apart */
	control_stop(pc->control);
	pc->control = NULL;
	screen_teardown(&pc->screen, &pc->opt.screen);
	/* the viewers are gone: nothing moves the tablet any more */
	uhci_destroy(pc->uhci);
	pc->uhci = NULL;
	usb_tablet_destroy(pc->tablet);
	pc->tablet = NULL;
	uart_in_use = pc->console ? console_close(pc->console) : false;

	if (pc->ahci)
		ahci_destroy(pc->ahci);
	/* the backend's thread delivers into the card: stop it first */
	net_backend_close(pc->net_backend);
	pc->net_backend = NULL;
	virtio_net_destroy(pc->net);
	pc->net = NULL;
	net_config_free(&pc->opt.net_config);
	for (unsigned i = 0; i < pc->opt.ndisks; i++) {
		int r = pc->disk[i] ? img_close(pc->disk[i]) : 0;

		if (r) {
			fprintf(stderr, "imgvm: %s: closing the disk: %s\n",
				pc->opt.disk[i].path, strerror(-r));
			ret = r;
		}
	}
	cmos_destroy(pc->cmos);
	/* with a console input thread (blocked in read) the UART stays */
	if (!uart_in_use)
		uart_destroy(pc->uart);
	i8042_destroy(pc->kbc);
	piix_destroy(pc->piix);
	debug_ports_destroy(pc->debug);
	if (pc->vm)
		fw_cfg_destroy(pc->vm->fw_cfg);
	outbuf_destroy(pc->firmware_log);
	if (pc->firmware_log_fd >= 0)
		close(pc->firmware_log_fd);
	vmm_destroy(pc->vm);
	pc->vm = NULL;
	return ret;
}
