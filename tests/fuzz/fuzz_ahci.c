/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness: the AHCI HBA's command list, command FIS and PRDT
 * handling, the ATA command set of the SATA disk (port 0) and ATAPI
 * packets to the CD-ROM (port 1), driven as a hostile guest would.  The
 * real device code runs with its machine services replaced by a small
 * guest (the ahci_host_ops table, as tests/unit/test_vmm_ahci.c does).
 *
 * Input: byte 0 = PxCI slots to issue (bits 0-3 port 0, 4-7 port 1),
 * byte 1 = PxSACT bits likewise, then up to 8 commands of 224 bytes each
 * (32-byte command header, 128-byte command table head = CFIS + ACMD,
 * four PRDT entries), then 8-byte register writes (u32 offset, u32 value)
 * applied once the commands completed.  The harness points each header at
 * its table and each PRD into guest RAM, so the fuzzer spends its time in
 * the FIS/ATA/ATAPI decoding rather than in unmapped addresses; PRDTL,
 * byte counts and every other field stay the fuzzer's.
 * Built by `make fuzz` with clang -fsanitize=fuzzer,address,undefined.
 * fuzz-sources: vmm/devices/ahci.c vmm/devices/ata_disk.c vmm/devices/atapi.c
 */
#include "vmm/devices/ahci.h"
#include "img.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GUEST_SIZE (4u << 20)
#define CLB(port) (0x1000u + (port)*0x1000u)
#define FB(port) (0x3000u + (port)*0x100u)
#define CTBA(port, slot) (0x10000u + (port)*0x8000u + (slot)*0x1000u)
#define DATA_BASE 0x100000u
#define DATA_SIZE (GUEST_SIZE - DATA_BASE)
#define CMD_BYTES 224u
#define PORT(p, r) (0x100u + (p)*0x80u + (r))

struct guest {
	uint8_t *mem;
	struct pci_device *dev;
	void (*reset_fn)(void *opaque);
	void *reset_opaque;
	struct ahci *ahci;
};

static struct guest G;

static void *g_gpa_to_hva(void *ctx, uint64_t gpa, uint64_t len)
{
	struct guest *g = ctx;

	if (gpa >= GUEST_SIZE || len > GUEST_SIZE - gpa)
		return NULL;
	return g->mem + gpa;
}

static int g_register_pci(void *ctx, struct pci_device *dev, unsigned slot)
{
	(void)slot;
	((struct guest *)ctx)->dev = dev;
	return 0;
}

static void g_set_intx(void *ctx, struct pci_device *dev, bool level)
{
	(void)ctx;
	(void)dev;
	(void)level;
}

static bool g_msi_notify(void *ctx, struct pci_device *dev, unsigned cap_off)
{
	(void)ctx;
	(void)dev;
	(void)cap_off;
	return false;
}

static void g_on_reset(void *ctx, void (*fn)(void *opaque), void *opaque)
{
	struct guest *g = ctx;

	g->reset_fn = fn;
	g->reset_opaque = opaque;
}

static const struct ahci_host_ops g_ops = {
	.gpa_to_hva = g_gpa_to_hva,
	.register_pci = g_register_pci,
	.set_intx = g_set_intx,
	.msi_notify = g_msi_notify,
	.on_reset = g_on_reset,
};

/* ahci_create() (not used here) references the machine; these stand in
 * so the device links without the rest of the VMM. */
void *vmm_gpa_to_hva(struct vmm *vm, uint64_t gpa, uint64_t len)
{
	(void)vm;
	(void)gpa;
	(void)len;
	abort();
}

void vmm_on_reset(struct vmm *vm, void (*fn)(void *opaque), void *opaque)
{
	(void)vm;
	(void)fn;
	(void)opaque;
	abort();
}

int pci_register_device(struct vmm *vm, struct pci_device *dev, unsigned slot)
{
	(void)vm;
	(void)dev;
	(void)slot;
	abort();
}

void pci_set_intx(struct pci_device *dev, bool level)
{
	(void)dev;
	(void)level;
	abort();
}

bool pci_msi_notify(struct pci_device *dev, unsigned cap_off)
{
	(void)dev;
	(void)cap_off;
	abort();
}

static void g_write(unsigned off, uint32_t v)
{
	G.dev->bar_io[5](G.dev->opaque, off, &v, 4, true);
}

static uint32_t g_read(unsigned off)
{
	uint32_t v = 0;

	G.dev->bar_io[5](G.dev->opaque, off, &v, 4, false);
	return v;
}

static void fuzz_setup(void)
{
	static char dir[] = "/tmp/fuzz-ahci-XXXXXX";
	struct img_create_options co = { .format = "raw", .size = 1u << 20 };
	struct img_open_options oo = { .format = "raw",
				       .flags = IMG_OPEN_RDWR };
	char disk_path[128], iso_path[128], err[256];
	struct img *disk;
	FILE *iso;

	if (!mkdtemp(dir))
		abort();
	snprintf(disk_path, sizeof(disk_path), "%s/disk.raw", dir);
	snprintf(iso_path, sizeof(iso_path), "%s/cd.iso", dir);
	if (img_create(disk_path, &co, err, sizeof(err)) < 0 ||
	    img_open(&disk, disk_path, &oo, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_ahci: %s\n", err);
		abort();
	}
	/* 64 sectors of 2048 bytes, each filled with its number */
	iso = fopen(iso_path, "w");
	if (!iso)
		abort();
	for (unsigned s = 0; s < 64; s++)
		for (unsigned i = 0; i < 2048; i++)
			fputc((int)s, iso);
	fclose(iso);

	G.mem = calloc(1, GUEST_SIZE);
	if (!G.mem)
		abort();
	struct ahci_config cfg = { .disk = { disk }, .cdrom_path = iso_path };
	G.ahci = ahci_create_with_ops(&g_ops, &G, 0x1F << 3, &cfg, err,
				      sizeof(err));
	if (!G.ahci || !G.dev || !G.reset_fn) {
		fprintf(stderr, "fuzz_ahci: %s\n", err);
		abort();
	}
}

static void start_port(unsigned port)
{
	g_write(PORT(port, 0x00), CLB(port));
	g_write(PORT(port, 0x04), 0);
	g_write(PORT(port, 0x08), FB(port));
	g_write(PORT(port, 0x0C), 0);
	g_write(PORT(port, 0x18), 0x10); /* FRE */
	g_write(PORT(port, 0x30), 0xFFFFFFFF);
	g_write(PORT(port, 0x10), 0xFFFFFFFF);
	g_write(PORT(port, 0x14), 0xFDC000FF);
	g_write(0x04, 0x80000002);	 /* GHC: AE, IE */
	g_write(PORT(port, 0x18), 0x11); /* FRE, ST */
}

static void put_command(unsigned k, const uint8_t *in)
{
	unsigned port = k / 4, slot = k % 4;
	uint8_t *hdr = G.mem + CLB(port) + slot * 32;
	uint8_t *tbl = G.mem + CTBA(port, slot);
	uint64_t ctba = CTBA(port, slot);

	memcpy(hdr, in, 32);
	memcpy(hdr + 8, &ctba, 8);
	memcpy(tbl, in + 32, 128);
	memcpy(tbl + 128, in + 160, 64);
	for (unsigned i = 0; i < 4; i++) {
		uint8_t *prd = tbl + 128 + i * 16;
		uint64_t dba;

		memcpy(&dba, prd, 8);
		dba = DATA_BASE + (dba % DATA_SIZE);
		memcpy(prd, &dba, 8);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t ci, sact;
	unsigned ncmd = 0;

	if (!G.ahci)
		fuzz_setup();
	if (size < 2)
		return 0;
	G.reset_fn(G.reset_opaque);
	memset(G.mem, 0, DATA_BASE);
	ci = data[0];
	sact = data[1];
	data += 2;
	size -= 2;
	while (ncmd < 8 && size >= CMD_BYTES) {
		put_command(ncmd++, data);
		data += CMD_BYTES;
		size -= CMD_BYTES;
	}
	start_port(0);
	start_port(1);
	for (unsigned port = 0; port < 2; port++) {
		g_write(PORT(port, 0x34), (sact >> (port * 4)) & 0xF);
		g_write(PORT(port, 0x38), (ci >> (port * 4)) & 0xF);
	}
	ahci_wait_idle(G.ahci);
	/* Then whatever the guest pokes at the register file. */
	while (size >= 8) {
		uint32_t off, val;

		memcpy(&off, data, 4);
		memcpy(&val, data + 4, 4);
		off &= 0xFFC;
		if (off & 0x800) /* reads, to cover the read side too */
			g_read(off & 0x7FC);
		else
			g_write(off, val);
		data += 8;
		size -= 8;
	}
	ahci_wait_idle(G.ahci);
	return 0;
}
