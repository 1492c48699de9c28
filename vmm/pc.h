/* SPDX-License-Identifier: MIT */
/*
 * The PC imgvm assembles from its boot options: the KVM machine, the
 * platform devices (CMOS, UART, i8042, PIIX, debug ports), fw_cfg's tables
 * for SeaBIOS, the AHCI controller with its disks and CD-ROM, and the serial
 * console.  pc_setup builds it, pc_run runs the guest, pc_teardown takes it
 * apart (flushing and closing the disks).
 */
#ifndef IMGVM_PC_H
#define IMGVM_PC_H

#include <stdbool.h>

#include "img.h"
#include "vmm/machine.h"
#include "vmm/options.h"

struct ahci;
struct net_backend;
struct virtio_net;
struct control;
struct uhci;
struct usb_tablet;

struct pc {
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
	struct net_backend *net_backend;
	struct virtio_net *net;
	struct control *control;
	struct uhci *uhci;
	struct usb_tablet *tablet;
	bool ejected;
	struct screen screen;
};

/* pc->opt is filled; everything else zero but firmware_log_fd = -1
 * (PC_INIT).  Errors as one line on stderr; the caller calls pc_teardown
 * either way. */
#define PC_INIT                       \
	{                             \
		.firmware_log_fd = -1 \
	}
int pc_setup(struct pc *pc);
/* Runs the guest; returns the exit status (vmm_run's). */
int pc_run(struct pc *pc);
/* Frees everything pc_setup made; returns a negative errno when a disk
 * could not be flushed and closed. */
int pc_teardown(struct pc *pc);

#endif
