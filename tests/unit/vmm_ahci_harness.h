/* SPDX-License-Identifier: MIT */
/*
 * Test harness for the AHCI HBA: the real device code (ahci.c, ata_disk.c,
 * atapi.c) with its machine services replaced by a small guest: guest RAM
 * is a malloc'd buffer, the PCI function and the interrupt line are
 * recorded here.  Tests drive the HBA through its BAR5 registers and build
 * command lists, tables and PRDTs in that guest RAM, as a driver does.
 */
#ifndef TESTS_VMM_AHCI_HARNESS_H
#define TESTS_VMM_AHCI_HARNESS_H

#include "vmm/devices/ahci.h"
#include "img.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define H_MEM_SIZE (8u << 20)
/* guest memory layout used by the tests */
#define H_CLB(port) (0x10000u + (port)*0x1000u)
#define H_FB(port) (0x20000u + (port)*0x1000u)
#define H_CTBA(port, slot) (0x40000u + (port)*0x10000u + (slot)*0x400u)
#define H_DATA 0x100000u

/* register offsets */
#define H_CAP 0x00
#define H_GHC 0x04
#define H_IS 0x08
#define H_PI 0x0C
#define H_VS 0x10
#define H_PORT(p, r) (0x100u + (p)*0x80u + (r))
#define P_CLB 0x00
#define P_CLBU 0x04
#define P_FB 0x08
#define P_FBU 0x0C
#define P_IS 0x10
#define P_IE 0x14
#define P_CMD 0x18
#define P_TFD 0x20
#define P_SIG 0x24
#define P_SSTS 0x28
#define P_SCTL 0x2C
#define P_SERR 0x30
#define P_SACT 0x34
#define P_CI 0x38

struct harness {
	uint8_t *mem;
	struct pci_device *dev;
	bool intx;
	int intx_raises;
	bool msi_enabled;
	int msi_count;
	void (*reset_fn)(void *opaque);
	void *reset_opaque;
	struct ahci *ahci;
};

static void *h_gpa_to_hva(void *ctx, uint64_t gpa, uint64_t len)
{
	struct harness *h = ctx;

	if (gpa >= H_MEM_SIZE || len > H_MEM_SIZE - gpa)
		return NULL;
	return h->mem + gpa;
}

static int h_register_pci(void *ctx, struct pci_device *dev, unsigned slot)
{
	struct harness *h = ctx;

	(void)slot;
	h->dev = dev;
	return 0;
}

static void h_set_intx(void *ctx, struct pci_device *dev, bool level)
{
	struct harness *h = ctx;

	(void)dev;
	if (level && !h->intx)
		h->intx_raises++;
	h->intx = level;
}

static bool h_msi_notify(void *ctx, struct pci_device *dev, unsigned cap_off)
{
	struct harness *h = ctx;

	(void)dev;
	(void)cap_off;
	if (!h->msi_enabled)
		return false;
	h->msi_count++;
	return true;
}

static void h_on_reset(void *ctx, void (*fn)(void *opaque), void *opaque)
{
	struct harness *h = ctx;

	h->reset_fn = fn;
	h->reset_opaque = opaque;
}

static const struct ahci_host_ops h_ops = {
	.gpa_to_hva = h_gpa_to_hva,
	.register_pci = h_register_pci,
	.set_intx = h_set_intx,
	.msi_notify = h_msi_notify,
	.on_reset = h_on_reset,
};

static inline uint32_t h_read(struct harness *h, unsigned off)
{
	uint32_t v = 0;

	h->dev->bar_io[5](h->dev->opaque, off, &v, 4, false);
	return v;
}

static inline void h_write(struct harness *h, unsigned off, uint32_t v)
{
	h->dev->bar_io[5](h->dev->opaque, off, &v, 4, true);
}

static inline void h_create(struct harness *h, const struct ahci_config *cfg)
{
	char err[256] = "";

	memset(h, 0, sizeof(*h));
	h->mem = calloc(1, H_MEM_SIZE);
	cr_assert_not_null(h->mem);
	h->ahci = ahci_create_with_ops(&h_ops, h, 0x1F << 3, cfg, err,
				       sizeof(err));
	cr_assert_not_null(h->ahci, "ahci_create: %s", err);
	cr_assert_not_null(h->dev);
	cr_assert_eq(h->dev, ahci_pci_device(h->ahci));
	cr_assert_not_null(h->reset_fn);
}

static inline void h_destroy(struct harness *h)
{
	ahci_destroy(h->ahci);
	free(h->mem);
}

/* Start a port the way Linux does: addresses, FRE, interrupts, ST. */
static inline void h_start_port(struct harness *h, unsigned port)
{
	h_write(h, H_PORT(port, P_CLB), H_CLB(port));
	h_write(h, H_PORT(port, P_CLBU), 0);
	h_write(h, H_PORT(port, P_FB), H_FB(port));
	h_write(h, H_PORT(port, P_FBU), 0);
	h_write(h, H_PORT(port, P_CMD), 0x10); /* FRE */
	h_write(h, H_PORT(port, P_SERR), 0xFFFFFFFF);
	h_write(h, H_PORT(port, P_IS), 0xFFFFFFFF);
	h_write(h, H_PORT(port, P_IE), 0xFDC000FF);
	h_write(h, H_GHC, 0x80000002);	       /* AE, IE */
	h_write(h, H_PORT(port, P_CMD), 0x11); /* FRE, ST */
}

/* A command slot: header, H2D FIS, PRDT. Returns the command table. */
static inline uint8_t *h_command(struct harness *h, unsigned port,
				 unsigned slot, uint8_t command, uint64_t lba,
				 uint16_t count, uint16_t features, bool write,
				 unsigned prdtl)
{
	uint8_t *hdr = h->mem + H_CLB(port) + slot * 32;
	uint8_t *tbl = h->mem + H_CTBA(port, slot);
	uint32_t dw0 = 5 | (write ? 1u << 6 : 0) | (uint32_t)prdtl << 16;
	uint64_t ctba = H_CTBA(port, slot);

	memset(hdr, 0, 32);
	memcpy(hdr, &dw0, 4);
	memcpy(hdr + 8, &ctba, 8);
	memset(tbl, 0, 0x80 + prdtl * 16);
	tbl[0] = 0x27;
	tbl[1] = 0x80;
	tbl[2] = command;
	tbl[3] = (uint8_t)features;
	tbl[4] = (uint8_t)lba;
	tbl[5] = (uint8_t)(lba >> 8);
	tbl[6] = (uint8_t)(lba >> 16);
	tbl[7] = 0x40;
	tbl[8] = (uint8_t)(lba >> 24);
	tbl[9] = (uint8_t)(lba >> 32);
	tbl[10] = (uint8_t)(lba >> 40);
	tbl[11] = (uint8_t)(features >> 8);
	tbl[12] = (uint8_t)count;
	tbl[13] = (uint8_t)(count >> 8);
	return tbl;
}

static inline void h_prd(uint8_t *tbl, unsigned i, uint64_t gpa, uint32_t len)
{
	uint32_t dw[4] = { (uint32_t)gpa, (uint32_t)(gpa >> 32), 0,
			   (len - 1) | 1u << 31 };

	memcpy(tbl + 0x80 + i * 16, dw, 16);
}

static inline uint32_t h_prdbc(struct harness *h, unsigned port, unsigned slot)
{
	uint32_t v;

	memcpy(&v, h->mem + H_CLB(port) + slot * 32 + 4, 4);
	return v;
}

/* Issue slot and wait until the HBA finished it. */
static inline void h_issue(struct harness *h, unsigned port, unsigned slot)
{
	h_write(h, H_PORT(port, P_CI), 1u << slot);
	ahci_wait_idle(h->ahci);
}

/* Status and error of the last D2H FIS */
static inline uint8_t h_d2h_status(struct harness *h, unsigned port)
{
	return h->mem[H_FB(port) + 0x40 + 2];
}

static inline uint8_t h_d2h_error(struct harness *h, unsigned port)
{
	return h->mem[H_FB(port) + 0x40 + 3];
}

#endif
