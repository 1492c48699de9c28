/* SPDX-License-Identifier: MIT */
/*
 * AHCI HBA + SATA disk: the register file, command list / FIS / PRDT
 * handling, NCQ, the ATA command set, and hostile guests.  The disk is a
 * real raw image opened with libimg.
 */
#include "vmm_ahci_harness.h"

#include <stdio.h>
#include <unistd.h>

#define DISK_SECTORS 4096u /* 2 MiB */

static struct harness H;
static struct img *disk;
static char dir[64], path[128];

static uint8_t pattern(uint64_t sector, unsigned i)
{
	return (uint8_t)(sector * 7 + i * 13 + (sector >> 8));
}

static void open_disk(bool read_only)
{
	struct img_create_options co = { .format = "raw",
					 .size = DISK_SECTORS * 512ull };
	struct img_open_options oo = { .format = "raw",
				       .flags = IMG_OPEN_RDWR };
	char err[256];
	uint8_t *buf = malloc(DISK_SECTORS * 512ull);

	strcpy(dir, "/tmp/test_vmm_ahci.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/disk.raw", dir);
	cr_assert_eq(img_create(path, &co, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(img_open(&disk, path, &oo, err, sizeof(err)), 0, "%s",
		     err);
	for (uint64_t s = 0; s < DISK_SECTORS; s++)
		for (unsigned i = 0; i < 512; i++)
			buf[s * 512 + i] = pattern(s, i);
	cr_assert_eq(img_pwrite(disk, buf, DISK_SECTORS * 512ull, 0), 0);
	free(buf);
	struct ahci_config cfg = { .disk = { disk },
				   .disk_read_only = { read_only } };
	h_create(&H, &cfg);
}

static void setup(void)
{
	open_disk(false);
}

static void teardown(void)
{
	h_destroy(&H);
	img_close(disk);
	unlink(path);
	rmdir(dir);
}

TestSuite(ahci, .init = setup, .fini = teardown, .timeout = 30);

Test(ahci, pci_identity)
{
	uint8_t *c = H.dev->config;

	cr_assert_eq(c[0] | c[1] << 8, 0x8086);
	cr_assert_eq(c[2] | c[3] << 8, 0x2922);
	cr_assert_eq(c[0x0B], 0x01);
	cr_assert_eq(c[0x0A], 0x06);
	cr_assert_eq(c[0x09], 0x01);
	cr_assert_eq(H.dev->bar_size[5], 0x1000);
	cr_assert_not_null(H.dev->bar_io[5]);
	/* capability list: MSI at the pointer */
	cr_assert(c[0x06] & 0x10);
	cr_assert_eq(c[c[0x34]], 0x05);
}

Test(ahci, generic_host_control)
{
	uint32_t cap = h_read(&H, H_CAP);

	cr_assert_eq(cap & 0x1F, 5, "six ports");
	cr_assert_eq((cap >> 8) & 0x1F, 31, "32 command slots");
	cr_assert(cap & (1u << 30), "NCQ");
	cr_assert(cap & (1u << 31), "64-bit addressing");
	cr_assert(cap & (1u << 18), "AHCI only");
	cr_assert_eq(h_read(&H, H_PI), 0x3F);
	cr_assert_eq(h_read(&H, H_VS), 0x00010300);
	cr_assert_eq(h_read(&H, H_GHC), 0x80000000u);
	/* AE cannot be cleared; IE sticks; MRSM does not */
	h_write(&H, H_GHC, 0x00000006);
	cr_assert_eq(h_read(&H, H_GHC), 0x80000002u);
	/* unimplemented registers read as zero and ignore writes */
	h_write(&H, 0x0A0, 0xFFFFFFFF);
	cr_assert_eq(h_read(&H, 0x0A0), 0);
	cr_assert_eq(h_read(&H, 0xFFC), 0);
}

Test(ahci, port_signatures_and_status)
{
	cr_assert_eq(h_read(&H, H_PORT(0, P_SIG)), 0x00000101);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SSTS)), 0x123);
	cr_assert_eq(h_read(&H, H_PORT(0, P_TFD)) & 0x89, 0, "not busy");
	/* no CD-ROM configured here: ports 1-5 are empty */
	for (unsigned p = 1; p < 6; p++) {
		cr_assert_eq(h_read(&H, H_PORT(p, P_SSTS)), 0);
		cr_assert_eq(h_read(&H, H_PORT(p, P_SIG)), 0xFFFFFFFFu);
		cr_assert_eq(h_read(&H, H_PORT(p, P_TFD)), 0x7F);
	}
}

Test(ahci, port_registers)
{
	h_write(&H, H_PORT(0, P_CLB), 0x12345FFF);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CLB)), 0x12345C00, "1K aligned");
	h_write(&H, H_PORT(0, P_CLBU), 0x1);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CLBU)), 0x1);
	h_write(&H, H_PORT(0, P_FB), 0xABCDEFFF);
	cr_assert_eq(h_read(&H, H_PORT(0, P_FB)), 0xABCDEF00, "256 aligned");
	/* FRE -> FR, ST -> CR; SUD and POD always set */
	h_write(&H, H_PORT(0, P_CMD), 0x10);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CMD)) & 0xC017, 0x4016);
	h_write(&H, H_PORT(0, P_CMD), 0x11);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CMD)) & 0xC017, 0xC017);
	h_write(&H, H_PORT(0, P_CMD), 0x00);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CMD)) & 0xC011, 0);
	/* CI is ignored while the port is stopped */
	h_write(&H, H_PORT(0, P_CI), 1);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	/* IE keeps only defined bits */
	h_write(&H, H_PORT(0, P_IE), 0xFFFFFFFF);
	cr_assert_eq(h_read(&H, H_PORT(0, P_IE)), 0xFDC000FF);
	/* partial-width accesses */
	uint16_t half = 0;
	H.dev->bar_io[5](H.dev->opaque, H_PORT(0, P_SIG), &half, 2, false);
	cr_assert_eq(half, 0x0101);
	uint8_t byte = 0;
	H.dev->bar_io[5](H.dev->opaque, H_VS + 2, &byte, 1, false);
	cr_assert_eq(byte, 0x01);
	uint64_t quad = 0;
	H.dev->bar_io[5](H.dev->opaque, H_PORT(0, P_CLB), &quad, 8, false);
	cr_assert_eq(quad, 0x0000000112345C00ull);
}

Test(ahci, identify_device)
{
	uint16_t id[256];
	uint8_t sum = 0;
	char model[41];

	h_start_port(&H, 0);
	uint8_t *t = h_command(&H, 0, 0, 0xEC, 0, 0, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	cr_assert_eq(h_prdbc(&H, 0, 0), 512);
	memcpy(id, H.mem + H_DATA, 512);
	for (unsigned i = 0; i < 512; i++)
		sum += H.mem[H_DATA + i];
	cr_assert_eq(sum, 0, "IDENTIFY checksum");
	cr_assert_eq(id[255] & 0xFF, 0xA5);
	for (unsigned i = 0; i < 20; i++) {
		model[2 * i] = (char)(id[27 + i] >> 8);
		model[2 * i + 1] = (char)id[27 + i];
	}
	model[40] = 0;
	cr_assert(strncmp(model, "IMGVM HARDDISK", 14) == 0, "%s", model);
	cr_assert_eq(id[100] | (uint32_t)id[101] << 16, DISK_SECTORS);
	cr_assert_eq(id[60] | (uint32_t)id[61] << 16, DISK_SECTORS);
	cr_assert(id[83] & (1 << 10), "LBA48");
	cr_assert(id[76] & (1 << 8), "NCQ");
	cr_assert_eq(id[75] & 0x1F, 31);
	cr_assert(id[169] & 1, "TRIM");
	cr_assert(id[85] & (1 << 5), "write cache on");
	/* PIO Setup FIS with E_Status, then D2H FIS; PSS and DHRS */
	cr_assert_eq(H.mem[H_FB(0) + 0x20], 0x5F);
	cr_assert_eq(H.mem[H_FB(0) + 0x20 + 15], 0x50);
	cr_assert_eq(H.mem[H_FB(0) + 0x40], 0x34);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	cr_assert_eq(h_read(&H, H_PORT(0, P_IS)) & 3, 3);
	cr_assert_eq(h_read(&H, H_PORT(0, P_TFD)), 0x50);
	/* the interrupt: IS bit 0, INTx up; cleared in port then HBA */
	cr_assert_eq(h_read(&H, H_IS), 1);
	cr_assert(H.intx);
	h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
	cr_assert(H.intx, "HBA IS still set");
	h_write(&H, H_IS, 1);
	cr_assert_not(H.intx);
	cr_assert_eq(h_read(&H, H_IS), 0);
}

static void check_sectors(const uint8_t *buf, uint64_t lba, unsigned n)
{
	for (unsigned s = 0; s < n; s++)
		for (unsigned i = 0; i < 512; i++)
			cr_assert_eq(buf[s * 512 + i], pattern(lba + s, i),
				     "sector %lu byte %u",
				     (unsigned long)(lba + s), i);
}

Test(ahci, read_dma_ext_scattered_prdt)
{
	h_start_port(&H, 0);
	/* 8 sectors into three pieces: 1024 + 2048 + 1024 bytes, the
	 * middle one elsewhere in memory */
	uint8_t *t = h_command(&H, 0, 3, 0x25, 100, 8, 0, false, 3);
	h_prd(t, 0, H_DATA, 1024);
	h_prd(t, 1, H_DATA + 0x10000, 2048);
	h_prd(t, 2, H_DATA + 1024, 1024);
	h_issue(&H, 0, 3);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	cr_assert_eq(h_prdbc(&H, 0, 3), 4096);
	check_sectors(H.mem + H_DATA, 100, 2);
	check_sectors(H.mem + H_DATA + 0x10000, 102, 4);
	check_sectors(H.mem + H_DATA + 1024, 106, 2);
	cr_assert_eq(h_read(&H, H_PORT(0, P_IS)) & 1, 1, "DHRS");
}

Test(ahci, read_dma_lba28_and_pio)
{
	h_start_port(&H, 0);
	uint8_t *t = h_command(&H, 0, 0, 0xC8, 5, 2, 0, false, 1);
	h_prd(t, 0, H_DATA, 1024);
	h_issue(&H, 0, 0);
	check_sectors(H.mem + H_DATA, 5, 2);
	/* READ SECTORS EXT (PIO) */
	t = h_command(&H, 0, 1, 0x24, 4000, 3, 0, false, 1);
	h_prd(t, 0, H_DATA + 0x8000, 1536);
	h_issue(&H, 0, 1);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	check_sectors(H.mem + H_DATA + 0x8000, 4000, 3);
	cr_assert_eq(H.mem[H_FB(0) + 0x20], 0x5F, "PIO Setup FIS");
}

Test(ahci, write_dma_ext_lands_in_image)
{
	uint8_t back[1536];

	h_start_port(&H, 0);
	for (unsigned i = 0; i < 1536; i++)
		H.mem[H_DATA + i] = (uint8_t)(i * 31 + 5);
	uint8_t *t = h_command(&H, 0, 0, 0x35, 2000, 3, 0, true, 2);
	h_prd(t, 0, H_DATA, 512);
	h_prd(t, 1, H_DATA + 512, 1024);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	cr_assert_eq(img_pread(disk, back, sizeof(back), 2000 * 512ull), 0);
	cr_assert(memcmp(back, H.mem + H_DATA, sizeof(back)) == 0);
	/* the neighbours are untouched */
	cr_assert_eq(img_pread(disk, back, 512, 1999 * 512ull), 0);
	check_sectors(back, 1999, 1);
	cr_assert_eq(img_pread(disk, back, 512, 2003 * 512ull), 0);
	check_sectors(back, 2003, 1);
	/* FLUSH CACHE EXT */
	h_command(&H, 0, 1, 0xEA, 0, 0, 0, false, 0);
	h_issue(&H, 0, 1);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
}

Test(ahci, ncq_queue)
{
	uint8_t back[512];

	h_start_port(&H, 0);
	for (unsigned i = 0; i < 512; i++)
		H.mem[H_DATA + 0x40000 + i] = (uint8_t)~i;
	/* slot 4: read 4 sectors at 10; slot 9: write 1 sector at 50;
	 * slot 31: read 1 at the last sector.  NCQ: count in features,
	 * tag in count bits 7:3 */
	uint8_t *t = h_command(&H, 0, 4, 0x60, 10, 4 << 3, 4, false, 1);
	h_prd(t, 0, H_DATA, 2048);
	t = h_command(&H, 0, 9, 0x61, 50, 9 << 3, 1, true, 1);
	h_prd(t, 0, H_DATA + 0x40000, 512);
	t = h_command(&H, 0, 31, 0x60, DISK_SECTORS - 1, 31 << 3, 1, false, 1);
	h_prd(t, 0, H_DATA + 0x20000, 512);
	uint32_t tags = 1u << 4 | 1u << 9 | 1u << 31;
	h_write(&H, H_PORT(0, P_SACT), tags);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SACT)), tags);
	h_write(&H, H_PORT(0, P_CI), tags);
	ahci_wait_idle(H.ahci);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SACT)), 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 3), "SDBS");
	cr_assert_eq(H.mem[H_FB(0) + 0x58], 0xA1, "SDB FIS");
	check_sectors(H.mem + H_DATA, 10, 4);
	check_sectors(H.mem + H_DATA + 0x20000, DISK_SECTORS - 1, 1);
	cr_assert_eq(img_pread(disk, back, 512, 50 * 512ull), 0);
	cr_assert(memcmp(back, H.mem + H_DATA + 0x40000, 512) == 0);
}

Test(ahci, ncq_error_halts_and_logs_tag)
{
	uint8_t log[512];

	h_start_port(&H, 0);
	uint8_t *t =
		h_command(&H, 0, 6, 0x60, DISK_SECTORS, 6 << 3, 1, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_write(&H, H_PORT(0, P_SACT), 1u << 6);
	h_issue(&H, 0, 6);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 30), "TFES");
	cr_assert(h_read(&H, H_PORT(0, P_TFD)) & 1, "ERR");
	cr_assert_eq(h_read(&H, H_PORT(0, P_SACT)), 1u << 6, "not completed");
	/* the host stops the engine, restarts, reads the NCQ error log */
	h_write(&H, H_PORT(0, P_CMD), 0x10);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SACT)), 0);
	h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
	h_write(&H, H_PORT(0, P_CMD), 0x11);
	t = h_command(&H, 0, 0, 0x2F, 0x10, 1, 0, false, 1);
	h_prd(t, 0, H_DATA + 0x1000, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	memcpy(log, H.mem + H_DATA + 0x1000, 512);
	cr_assert_eq(log[0], 6, "failed tag");
	uint8_t sum = 0;
	for (unsigned i = 0; i < 512; i++)
		sum += log[i];
	cr_assert_eq(sum, 0);
}

Test(ahci, lba_past_end_is_refused)
{
	h_start_port(&H, 0);
	uint8_t *t = h_command(&H, 0, 0, 0x35, DISK_SECTORS - 1, 2, 0, true, 1);
	memset(H.mem + H_DATA, 0xEE, 1024);
	h_prd(t, 0, H_DATA, 1024);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	cr_assert(h_d2h_error(&H, 0) & 0x10, "IDNF");
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 30), "TFES");
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	cr_assert_eq(img_size(disk), DISK_SECTORS * 512ull);
	uint8_t back[512];
	cr_assert_eq(img_pread(disk, back, 512, (DISK_SECTORS - 1) * 512ull),
		     0);
	check_sectors(back, DISK_SECTORS - 1, 1);
	/* a 48-bit LBA far beyond, and the maximum count */
	t = h_command(&H, 0, 1, 0x25, 0xFFFFFFFFFFFFull, 0, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 1);
	cr_assert(h_d2h_error(&H, 0) & 0x10);
	/* READ VERIFY past the end */
	h_command(&H, 0, 2, 0x42, DISK_SECTORS, 1, 0, false, 0);
	h_issue(&H, 0, 2);
	cr_assert(h_d2h_error(&H, 0) & 0x10);
	h_command(&H, 0, 3, 0x42, DISK_SECTORS - 1, 1, 0, false, 0);
	h_issue(&H, 0, 3);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
}

Test(ahci, prdt_outside_ram)
{
	h_start_port(&H, 0);
	/* a PRD entry beyond guest RAM, and one straddling its end */
	uint8_t *t = h_command(&H, 0, 0, 0x25, 0, 1, 0, false, 1);
	h_prd(t, 0, 0xFEE00000ull, 512);
	h_issue(&H, 0, 0);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 30), "TFES");
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	t = h_command(&H, 0, 1, 0x35, 0, 8, 0, true, 1);
	h_prd(t, 0, H_MEM_SIZE - 512, 4096);
	h_issue(&H, 0, 1);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	uint8_t back[512];
	cr_assert_eq(img_pread(disk, back, 512, 0), 0);
	check_sectors(back, 0, 1);
	/* a PRDT shorter than the transfer */
	t = h_command(&H, 0, 2, 0x25, 0, 8, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 2);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	/* 64-bit address in a PRD entry */
	t = h_command(&H, 0, 3, 0x25, 0, 1, 0, false, 1);
	h_prd(t, 0, (1ull << 40) + H_DATA, 512);
	h_issue(&H, 0, 3);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	/* the port still works afterwards */
	h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
	t = h_command(&H, 0, 4, 0x25, 7, 1, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 4);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	check_sectors(H.mem + H_DATA, 7, 1);
}

Test(ahci, hostile_command_list)
{
	h_start_port(&H, 0);
	/* command list base outside RAM: host bus fatal error, no crash */
	h_write(&H, H_PORT(0, P_CLBU), 0xFFFFFFFF);
	h_issue(&H, 0, 0);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 29), "HBFS");
	h_write(&H, H_PORT(0, P_CLBU), 0);
	h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
	/* command table outside RAM */
	uint8_t *hdr = H.mem + H_CLB(0) + 32;
	uint64_t bad = 0xFFFFFFFFFFFFFF80ull;
	h_command(&H, 0, 1, 0x25, 0, 1, 0, false, 1);
	memcpy(hdr + 8, &bad, 8);
	h_issue(&H, 0, 1);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 29));
	h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
	/* not an H2D FIS */
	uint8_t *t = h_command(&H, 0, 2, 0x25, 0, 1, 0, false, 1);
	t[0] = 0x34;
	h_issue(&H, 0, 2);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 30));
	/* command FIS length below 5 dwords */
	t = h_command(&H, 0, 3, 0x25, 0, 1, 0, false, 1);
	H.mem[H_CLB(0) + 3 * 32] = 2;
	h_issue(&H, 0, 3);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & (1u << 30));
	/* the largest PRDT length */
	t = h_command(&H, 0, 4, 0x25, 0, 1, 0, false, 0);
	H.mem[H_CLB(0) + 4 * 32 + 2] = 0xFF;
	H.mem[H_CLB(0) + 4 * 32 + 3] = 0xFF;
	h_issue(&H, 0, 4);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	/* NCQ without its SActive bit */
	t = h_command(&H, 0, 5, 0x60, 0, 5 << 3, 1, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 5);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	/* every slot at once, each a random FIS: the HBA survives */
	srand(1234);
	for (unsigned round = 0; round < 20; round++) {
		for (unsigned s = 0; s < 32; s++) {
			t = h_command(&H, 0, s, (uint8_t)rand(), rand(),
				      (uint16_t)rand(), (uint16_t)rand(),
				      rand() & 1, 1 + (rand() & 3));
			for (unsigned i = 0; i < 4; i++)
				h_prd(t, i,
				      (uint64_t)(rand() & 0x7FFFFF) |
					      ((rand() & 7) ? 0
							    : (uint64_t)rand()
								      << 32),
				      1 + (rand() & 0xFFFF));
			t[1] = (uint8_t)(rand() | 0x80);
		}
		h_write(&H, H_PORT(0, P_SACT), (uint32_t)rand());
		h_write(&H, H_PORT(0, P_CI), 0xFFFFFFFF);
		ahci_wait_idle(H.ahci);
		/* recover as a driver would */
		h_write(&H, H_PORT(0, P_CMD), 0x10);
		h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
		h_write(&H, H_PORT(0, P_CMD), 0x11);
	}
	cr_assert_eq(img_size(disk), DISK_SECTORS * 512ull);
	/* reads still return what the image holds */
	uint8_t back[512];
	t = h_command(&H, 0, 0, 0x25, 9, 1, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	cr_assert_eq(img_pread(disk, back, 512, 9 * 512), 0);
	cr_assert(memcmp(back, H.mem + H_DATA, 512) == 0);
}

Test(ahci, trim_and_set_features)
{
	uint16_t id[256];
	uint64_t entries[64] = { 0 };

	h_start_port(&H, 0);
	/* TRIM two ranges: the command completes, the data stays
	 * readable (zeros or the old data) */
	entries[0] = 100 | (uint64_t)8 << 48;
	entries[1] = 3000 | (uint64_t)16 << 48;
	memcpy(H.mem + H_DATA, entries, 512);
	uint8_t *t = h_command(&H, 0, 0, 0x06, 0, 1, 1, true, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	/* a range past the end aborts the whole command */
	entries[2] = (DISK_SECTORS - 1) | (uint64_t)2 << 48;
	memcpy(H.mem + H_DATA, entries, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	/* write cache off shows in IDENTIFY word 85 */
	h_command(&H, 0, 1, 0xEF, 0, 0, 0x82, false, 0);
	h_issue(&H, 0, 1);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	t = h_command(&H, 0, 2, 0xEC, 0, 0, 0, false, 1);
	h_prd(t, 0, H_DATA + 4096, 512);
	h_issue(&H, 0, 2);
	memcpy(id, H.mem + H_DATA + 4096, 512);
	cr_assert_not(id[85] & (1 << 5));
	/* a write with the cache off is still correct */
	t = h_command(&H, 0, 3, 0xCA, 1, 1, 0, true, 1);
	memset(H.mem + H_DATA + 8192, 0x5A, 512);
	h_prd(t, 0, H_DATA + 8192, 512);
	h_issue(&H, 0, 3);
	uint8_t back[512];
	cr_assert_eq(img_pread(disk, back, 512, 512), 0);
	cr_assert_eq(back[0], 0x5A);
	/* unknown SET FEATURES subcommand: aborted */
	h_command(&H, 0, 4, 0xEF, 0, 0, 0x77, false, 0);
	h_issue(&H, 0, 4);
	cr_assert_eq(h_d2h_error(&H, 0), 0x04);
	/* unknown command: aborted */
	h_command(&H, 0, 5, 0xFF, 0, 0, 0, false, 0);
	h_issue(&H, 0, 5);
	cr_assert_eq(h_d2h_error(&H, 0), 0x04);
	/* CHECK POWER MODE: count register 0xFF */
	h_command(&H, 0, 6, 0xE5, 0, 0, 0, false, 0);
	h_issue(&H, 0, 6);
	cr_assert_eq(H.mem[H_FB(0) + 0x40 + 12], 0xFF);
}

Test(ahci, resets)
{
	h_start_port(&H, 0);
	h_command(&H, 0, 0, 0xE7, 0, 0, 0, false, 0);
	h_issue(&H, 0, 0);
	cr_assert(h_read(&H, H_PORT(0, P_IS)));
	/* COMRESET: link down while DET=1, up with the signature after */
	h_write(&H, H_PORT(0, P_CMD), 0x10);
	h_write(&H, H_PORT(0, P_SCTL), 0x301);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SSTS)) & 0xF, 0);
	h_write(&H, H_PORT(0, P_SCTL), 0x300);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SSTS)), 0x123);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SIG)), 0x101);
	cr_assert_eq(H.mem[H_FB(0) + 0x40], 0x34, "signature FIS");
	cr_assert_eq(H.mem[H_FB(0) + 0x40 + 12], 0x01);
	/* HBA reset clears port registers, keeps the device */
	h_write(&H, H_GHC, 0x80000001);
	cr_assert_eq(h_read(&H, H_GHC), 0x80000000u);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CMD)) & 0x11, 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_IS)), 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_IE)), 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_SSTS)), 0x123);
	/* platform reset hook: everything to power-on state */
	h_start_port(&H, 0);
	H.reset_fn(H.reset_opaque);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CLB)), 0);
	cr_assert_eq(h_read(&H, H_GHC), 0x80000000u);
	cr_assert_not(H.intx);
	/* software reset through control FISes */
	h_start_port(&H, 0);
	uint8_t *t = h_command(&H, 0, 0, 0, 0, 0, 0, false, 0);
	t[1] = 0;
	t[15] = 0x04;
	h_issue(&H, 0, 0);
	t = h_command(&H, 0, 1, 0, 0, 0, 0, false, 0);
	t[1] = 0;
	t[15] = 0;
	h_issue(&H, 0, 1);
	cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
	cr_assert_eq(h_read(&H, H_PORT(0, P_TFD)) & 0x80, 0);
	cr_assert_eq(H.mem[H_FB(0) + 0x40 + 12], 0x01);
}

Test(ahci, msi)
{
	H.msi_enabled = true;
	h_start_port(&H, 0);
	for (unsigned i = 0; i < 3; i++) {
		h_command(&H, 0, i, 0xE7, 0, 0, 0, false, 0);
		h_issue(&H, 0, i);
		h_write(&H, H_PORT(0, P_IS), 0xFFFFFFFF);
		h_write(&H, H_IS, 1);
	}
	cr_assert_eq(H.msi_count, 3);
	cr_assert_not(H.intx);
	/* interrupts disabled in GHC: nothing sent */
	h_write(&H, H_GHC, 0x80000000);
	h_command(&H, 0, 0, 0xE7, 0, 0, 0, false, 0);
	h_issue(&H, 0, 0);
	cr_assert_eq(H.msi_count, 3);
	cr_assert(h_read(&H, H_PORT(0, P_IS)) & 1);
}

static void setup_ro(void)
{
	open_disk(true);
}

TestSuite(ahci_read_only, .init = setup_ro, .fini = teardown, .timeout = 30);

Test(ahci_read_only, writes_are_refused)
{
	h_start_port(&H, 0);
	memset(H.mem + H_DATA, 0xAB, 512);
	uint8_t *t = h_command(&H, 0, 0, 0x35, 0, 1, 0, true, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0) & 1, 1);
	uint8_t back[512];
	cr_assert_eq(img_pread(disk, back, 512, 0), 0);
	check_sectors(back, 0, 1);
	t = h_command(&H, 0, 1, 0x25, 0, 1, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 0, 1);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	check_sectors(H.mem + H_DATA, 0, 1);
}

Test(ahci, reset_while_commands_run)
{
	/* all 32 slots: 2 MiB reads each, then resets while they run */
	for (unsigned round = 0; round < 3; round++) {
		h_start_port(&H, 0);
		for (unsigned s = 0; s < 32; s++) {
			uint8_t *t = h_command(&H, 0, s, 0x25, 0, DISK_SECTORS,
					       0, false, 1);
			h_prd(t, 0, H_DATA, DISK_SECTORS * 512);
		}
		h_write(&H, H_PORT(0, P_CI), 0xFFFFFFFF);
		if (round == 0)
			h_write(&H, H_GHC, 0x80000001); /* HBA reset */
		else if (round == 1)
			h_write(&H, H_PORT(0, P_CMD), 0x10); /* stop */
		else
			H.reset_fn(H.reset_opaque); /* platform reset */
		cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0, "round %u", round);
		cr_assert_eq(h_read(&H, H_PORT(0, P_CMD)) & 0x8000, 0);
		ahci_wait_idle(H.ahci);
	}
	/* the port works afterwards */
	h_start_port(&H, 0);
	uint8_t *t = h_command(&H, 0, 0, 0x25, 33, 1, 0, false, 1);
	h_prd(t, 0, H_DATA + 0x300000, 512);
	h_issue(&H, 0, 0);
	cr_assert_eq(h_d2h_status(&H, 0), 0x50);
	check_sectors(H.mem + H_DATA + 0x300000, 33, 1);
}

Test(ahci, ncq_full_queue_concurrent)
{
	uint8_t back[64 * 512];

	/* 32 tags: even ones read 64 sectors, odd ones write 64 sectors,
	 * all distinct ranges; the disk workers run them concurrently */
	for (unsigned round = 0; round < 4; round++) {
		h_start_port(&H, 0);
		for (unsigned tag = 0; tag < 32; tag++) {
			bool write = tag & 1;
			uint64_t lba = tag * 64;
			uint8_t *buf = H.mem + H_DATA + tag * 64 * 512;

			if (write)
				for (unsigned i = 0; i < 64 * 512; i++)
					buf[i] = (uint8_t)(tag * 5 + round + i);
			uint8_t *t = h_command(&H, 0, tag, write ? 0x61 : 0x60,
					       lba, (uint16_t)(tag << 3), 64,
					       write, 2);
			/* two PRD entries per command */
			h_prd(t, 0, H_DATA + tag * 64 * 512, 32 * 512);
			h_prd(t, 1, H_DATA + tag * 64 * 512 + 32 * 512,
			      32 * 512);
		}
		h_write(&H, H_PORT(0, P_SACT), 0xFFFFFFFF);
		h_write(&H, H_PORT(0, P_CI), 0xFFFFFFFF);
		ahci_wait_idle(H.ahci);
		cr_assert_eq(h_read(&H, H_PORT(0, P_SACT)), 0);
		cr_assert_eq(h_read(&H, H_PORT(0, P_CI)), 0);
		cr_assert_eq(h_read(&H, H_PORT(0, P_TFD)) & 1, 0);
		for (unsigned tag = 0; tag < 32; tag++) {
			uint8_t *buf = H.mem + H_DATA + tag * 64 * 512;

			if (tag & 1) {
				cr_assert_eq(img_pread(disk, back, sizeof(back),
						       tag * 64 * 512ull),
					     0);
				cr_assert(memcmp(back, buf, sizeof(back)) == 0,
					  "tag %u", tag);
			} else if (round == 0) {
				check_sectors(buf, tag * 64, 64);
			}
		}
		h_write(&H, H_PORT(0, P_CMD), 0x10);
	}
}

/* Several disks: the first on port 0, the next on ports 2, 3, ...; each
 * port's commands reach its own image. */
static struct img *second;
static char second_path[160];

static void setup_two(void)
{
	struct img_create_options co = { .format = "raw", .size = 1 << 20 };
	struct img_open_options oo = { .format = "raw",
				       .flags = IMG_OPEN_RDWR };
	char err[256];

	open_disk(false);
	h_destroy(&H);
	snprintf(second_path, sizeof(second_path), "%s/second.raw", dir);
	cr_assert_eq(img_create(second_path, &co, err, sizeof(err)), 0, "%s",
		     err);
	cr_assert_eq(img_open(&second, second_path, &oo, err, sizeof(err)), 0,
		     "%s", err);
	struct ahci_config cfg = { .disk = { disk, second } };
	h_create(&H, &cfg);
}

static void teardown_two(void)
{
	h_destroy(&H);
	img_close(second);
	unlink(second_path);
	img_close(disk);
	unlink(path);
	rmdir(dir);
}

TestSuite(ahci_disks, .init = setup_two, .fini = teardown_two, .timeout = 30);

Test(ahci_disks, second_disk_on_port_2)
{
	uint16_t id[256];
	char serial[21];
	uint8_t back[1024];

	cr_assert_eq(ahci_disk_port(0), 0);
	cr_assert_eq(ahci_disk_port(1), 2);
	cr_assert_eq(ahci_disk_port(AHCI_MAX_DISKS - 1), 5);
	cr_assert_eq(h_read(&H, H_PORT(2, P_SIG)), 0x00000101);
	cr_assert_eq(h_read(&H, H_PORT(2, P_SSTS)), 0x123);
	cr_assert_eq(h_read(&H, H_PORT(1, P_SSTS)), 0, "no CD-ROM here");
	cr_assert_eq(h_read(&H, H_PORT(3, P_SSTS)), 0);

	h_start_port(&H, 2);
	uint8_t *t = h_command(&H, 2, 0, 0xEC, 0, 0, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 2, 0);
	cr_assert_eq(h_d2h_status(&H, 2), 0x50);
	memcpy(id, H.mem + H_DATA, 512);
	cr_assert_eq(id[100] | (uint32_t)id[101] << 16, 2048, "1 MiB disk");
	for (unsigned i = 0; i < 10; i++) {
		serial[2 * i] = (char)(id[10 + i] >> 8);
		serial[2 * i + 1] = (char)id[10 + i];
	}
	serial[20] = 0;
	cr_assert(strncmp(serial, "IMGVM2-", 7) == 0, "%s", serial);

	/* WRITE DMA EXT on port 2 lands in the second image only */
	for (unsigned i = 0; i < 1024; i++)
		H.mem[H_DATA + i] = (uint8_t)(i * 17 + 3);
	t = h_command(&H, 2, 0, 0x35, 100, 2, 0, true, 1);
	h_prd(t, 0, H_DATA, 1024);
	h_issue(&H, 2, 0);
	cr_assert_eq(h_d2h_status(&H, 2), 0x50);
	cr_assert_eq(img_pread(second, back, sizeof(back), 100 * 512ull), 0);
	cr_assert(memcmp(back, H.mem + H_DATA, sizeof(back)) == 0);
	cr_assert_eq(img_pread(disk, back, 512, 100 * 512ull), 0);
	check_sectors(back, 100, 1);
	/* past the second disk's end, though within the first's */
	t = h_command(&H, 2, 0, 0x25, 2048, 1, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, 2, 0);
	cr_assert(h_d2h_status(&H, 2) & 0x01, "ERR past the end");
}
