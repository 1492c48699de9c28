/* SPDX-License-Identifier: MIT */
/*
 * imgvm: AHCI 1.3 host bus adapter (Intel ICH9 AHCI, 8086:2922) with SATA
 * disks on ports 0 and 2-5 (backed by libimg) and a SATAPI CD-ROM on port 1
 * (backed by an ISO file).
 */
#ifndef IMGVM_AHCI_H
#define IMGVM_AHCI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/vmm.h"

struct img;

/* SATA disks: the first on port 0, the next ones on ports 2, 3, ...
 * (port 1 is the CD-ROM's, as in the machines users know). */
#define AHCI_MAX_DISKS 5

struct ahci;
struct ahci_config {
	struct img *disk[AHCI_MAX_DISKS]; /* NULL: no disk */
	bool disk_read_only[AHCI_MAX_DISKS];
	/* port 1 ATAPI CD-ROM ISO, or NULL: no CD-ROM */
	const char *cdrom_path;
};

/* The AHCI port of disk i (0 <= i < AHCI_MAX_DISKS). */
static inline unsigned ahci_disk_port(unsigned i)
{
	return i ? i + 1 : 0;
}

/* Registers a PCI AHCI HBA (ICH9 8086:2922) at devfn; reset hook included. */
struct ahci *ahci_create(struct vmm *vm, unsigned devfn,
			 const struct ahci_config *cfg, char *err,
			 size_t errlen);
/* Empty the tray (--eject-on-reboot). */
void ahci_eject_cdrom(struct ahci *ahci);
/* Put an ISO in the drive (the guest sees a new medium); -ENODEV without a
 * CD-ROM drive.  Errors as one line in err. */
int ahci_insert_cdrom(struct ahci *ahci, const char *path, char *err,
		      size_t errlen);
bool ahci_has_cdrom(struct ahci *ahci);
/* A copy of the ISO's file name in the drive; NULL when empty. */
char *ahci_cdrom_medium(struct ahci *ahci);
/* Bytes the guest read from and wrote to disk i. */
void ahci_disk_counters(struct ahci *ahci, unsigned i, uint64_t *read,
			uint64_t *written);
/* Stops the port threads, flushes the disk, frees. */
void ahci_destroy(struct ahci *ahci);

/* ---- ahci: test harness ------------------------------------------------
 * The machine services the HBA uses, as a table.  ahci_create() uses the
 * vmm.h functions; unit tests pass their own (guest memory = a buffer) and
 * drive the real device through its PCI function. */
struct ahci_host_ops {
	void *(*gpa_to_hva)(void *ctx, uint64_t gpa, uint64_t len);
	int (*register_pci)(void *ctx, struct pci_device *dev, unsigned slot);
	void (*set_intx)(void *ctx, struct pci_device *dev, bool level);
	/* true when MSI is enabled and the message was sent */
	bool (*msi_notify)(void *ctx, struct pci_device *dev, unsigned cap_off);
	void (*on_reset)(void *ctx, void (*fn)(void *opaque), void *opaque);
};

struct ahci *ahci_create_with_ops(const struct ahci_host_ops *ops, void *ctx,
				  unsigned devfn, const struct ahci_config *cfg,
				  char *err, size_t errlen);
/* The HBA's PCI function (config space, BAR5 handler). */
struct pci_device *ahci_pci_device(struct ahci *ahci);
/* Wait until no port has an issued command left to process. */
void ahci_wait_idle(struct ahci *ahci);

#endif
