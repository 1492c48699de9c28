/* SPDX-License-Identifier: MIT */
/*
 * SATAPI CD-ROM on AHCI port 1: every MMC command the guests use, sense
 * data, media change, eject, and hostile packets.  The medium is a real
 * file of 2048-byte blocks, driven through the real HBA.
 */
#include "vmm_ahci_harness.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define ISO_BLOCKS 300u
#define CD 1 /* the CD-ROM's port */

static struct harness H;
static char dir[64], path[128];

static uint8_t iso_byte(uint32_t block, unsigned i)
{
	if (i < 4)
		return (uint8_t)(block >> (24 - 8 * i));
	return (uint8_t)(block * 3 + i);
}

static void setup(void)
{
	static uint8_t block[2048];
	int fd;

	strcpy(dir, "/tmp/test_vmm_atapi.XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cd.iso", dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	cr_assert(fd >= 0);
	for (uint32_t b = 0; b < ISO_BLOCKS; b++) {
		for (unsigned i = 0; i < 2048; i++)
			block[i] = iso_byte(b, i);
		cr_assert_eq(write(fd, block, 2048), 2048);
	}
	close(fd);
	struct ahci_config cfg = { .cdrom_path = path };
	h_create(&H, &cfg);
	h_start_port(&H, CD);
}

static void teardown(void)
{
	h_destroy(&H);
	unlink(path);
	rmdir(dir);
}

TestSuite(atapi, .init = setup, .fini = teardown, .timeout = 30);

/* PACKET with a 12-byte command; data (if any) lands at H_DATA.
 * Returns the ending status. */
static uint8_t packet(const uint8_t *cdb, uint32_t buffer, bool dma)
{
	uint8_t *t = h_command(&H, CD, 0, 0xA0, (uint64_t)buffer << 8, 0,
			       dma ? 1 : 0, false, buffer ? 1 : 0);
	H.mem[H_CLB(CD)] |= 1 << 5; /* ATAPI bit */
	memcpy(t + 0x40, cdb, 12);
	if (buffer)
		h_prd(t, 0, H_DATA, buffer);
	memset(H.mem + H_DATA, 0xCC, buffer ? buffer : 16);
	h_write(&H, H_PORT(CD, P_IS), 0xFFFFFFFF);
	h_issue(&H, CD, 0);
	cr_assert_eq(h_read(&H, H_PORT(CD, P_CI)), 0, "command completed");
	return h_d2h_status(&H, CD);
}

static uint32_t transferred(void)
{
	return h_prdbc(&H, CD, 0);
}

struct sense {
	uint8_t key, asc, ascq;
};

static struct sense request_sense(void)
{
	uint8_t cdb[12] = { 0x03, 0, 0, 0, 18 };
	struct sense s;

	cr_assert_eq(packet(cdb, 18, false), 0x50);
	cr_assert_eq(transferred(), 18);
	cr_assert_eq(H.mem[H_DATA] & 0x7F, 0x70);
	s.key = H.mem[H_DATA + 2] & 0x0F;
	s.asc = H.mem[H_DATA + 12];
	s.ascq = H.mem[H_DATA + 13];
	return s;
}

static void expect_check(const uint8_t *cdb, uint32_t buffer, uint8_t key,
			 uint8_t asc)
{
	uint8_t status = packet(cdb, buffer, false);

	cr_assert_eq(status & 1, 1, "CHECK CONDITION for opcode %02x", cdb[0]);
	cr_assert_eq(h_d2h_error(&H, CD) >> 4, key);
	cr_assert(h_read(&H, H_PORT(CD, P_IS)) & (1u << 30), "TFES");
	struct sense s = request_sense();
	cr_assert_eq(s.key, key, "sense key %x, want %x", s.key, key);
	cr_assert_eq(s.asc, asc, "asc %02x, want %02x", s.asc, asc);
}

static uint16_t get_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

Test(atapi, signature_and_identify)
{
	uint16_t id[256];

	cr_assert_eq(h_read(&H, H_PORT(CD, P_SIG)), 0xEB140101u);
	cr_assert_eq(h_read(&H, H_PORT(CD, P_SSTS)), 0x123);
	/* IDENTIFY DEVICE is aborted and leaves the signature */
	uint8_t *t = h_command(&H, CD, 0, 0xEC, 0, 0, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, CD, 0);
	cr_assert_eq(h_d2h_status(&H, CD) & 1, 1);
	cr_assert_eq(H.mem[H_FB(CD) + 0x40 + 5], 0x14);
	cr_assert_eq(H.mem[H_FB(CD) + 0x40 + 6], 0xEB);
	/* IDENTIFY PACKET DEVICE */
	t = h_command(&H, CD, 0, 0xA1, 0, 0, 0, false, 1);
	h_prd(t, 0, H_DATA, 512);
	h_issue(&H, CD, 0);
	cr_assert_eq(h_d2h_status(&H, CD), 0x50);
	memcpy(id, H.mem + H_DATA, 512);
	cr_assert_eq(id[0] >> 14, 2, "ATAPI");
	cr_assert_eq((id[0] >> 8) & 0x1F, 5, "CD-ROM");
	cr_assert(id[0] & 0x80, "removable");
	cr_assert_eq(id[0] & 3, 0, "12-byte packets");
	uint8_t sum = 0;
	for (unsigned i = 0; i < 512; i++)
		sum += H.mem[H_DATA + i];
	cr_assert_eq(sum, 0);
}

Test(atapi, test_unit_ready_inquiry_capacity)
{
	uint8_t tur[12] = { 0x00 };
	uint8_t inquiry[12] = { 0x12, 0, 0, 0, 36 };
	uint8_t capacity[12] = { 0x25 };

	cr_assert_eq(packet(tur, 0, false), 0x50);
	cr_assert_eq(packet(inquiry, 96, false), 0x50);
	cr_assert_eq(transferred(), 36, "limited by the allocation length");
	cr_assert_eq(H.mem[H_DATA] & 0x1F, 5);
	cr_assert_eq(H.mem[H_DATA + 1], 0x80);
	cr_assert(memcmp(H.mem + H_DATA + 8, "IMGVM", 5) == 0);
	cr_assert_eq(H.mem[H_DATA + 36], 0xCC, "nothing past 36 bytes");
	/* allocation length shorter than the data */
	inquiry[4] = 5;
	cr_assert_eq(packet(inquiry, 96, false), 0x50);
	cr_assert_eq(transferred(), 5);
	/* EVPD page 0 and an unknown page */
	uint8_t vpd[12] = { 0x12, 1, 0, 0, 64 };
	cr_assert_eq(packet(vpd, 64, false), 0x50);
	cr_assert_eq(H.mem[H_DATA + 1], 0);
	vpd[2] = 0x83;
	expect_check(vpd, 64, 5, 0x24);
	cr_assert_eq(packet(capacity, 8, true), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), ISO_BLOCKS - 1);
	cr_assert_eq(get_be32(H.mem + H_DATA + 4), 2048);
}

Test(atapi, read_10_and_12)
{
	uint8_t r10[12] = { 0x28, 0, 0, 0, 0, 7, 0, 0, 3 };
	uint8_t r12[12] = { 0xA8, 0, 0, 0, 1, 0x20, 0, 0, 0, 2 };

	cr_assert_eq(packet(r10, 3 * 2048, true), 0x50);
	cr_assert_eq(transferred(), 3 * 2048);
	for (unsigned b = 0; b < 3; b++)
		for (unsigned i = 0; i < 2048; i += 97)
			cr_assert_eq(H.mem[H_DATA + b * 2048 + i],
				     iso_byte(7 + b, i));
	cr_assert_eq(packet(r12, 2 * 2048, true), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), 0x120);
	cr_assert_eq(get_be32(H.mem + H_DATA + 2048), 0x121);
	/* the last block; zero blocks */
	r10[5] = (ISO_BLOCKS - 1) & 0xFF;
	r10[4] = (ISO_BLOCKS - 1) >> 8;
	r10[8] = 1;
	cr_assert_eq(packet(r10, 2048, true), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), ISO_BLOCKS - 1);
	r10[8] = 0;
	cr_assert_eq(packet(r10, 2048, true), 0x50);
	cr_assert_eq(transferred(), 0);
	/* PIO (no DMA bit) works too */
	uint8_t r1[12] = { 0x28, 0, 0, 0, 0, 1, 0, 0, 1 };
	cr_assert_eq(packet(r1, 2048, false), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), 1);
	/* READ CD, user data only */
	uint8_t rcd[12] = { 0xBE, 0, 0, 0, 0, 2, 0, 0, 1, 0x10 };
	cr_assert_eq(packet(rcd, 2048, true), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), 2);
	rcd[9] = 0xF8; /* with headers: not supported */
	expect_check(rcd, 2352, 5, 0x24);
}

Test(atapi, read_out_of_range)
{
	uint8_t r10[12] = { 0x28, 0, 0, 0, 0x01, 0x2C, 0, 0, 1 }; /* 300 */
	uint8_t r12[12] = { 0xA8, 0,	0xFF, 0xFF, 0xFF,
			    0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

	expect_check(r10, 2048, 5, 0x21);
	r10[5] = 0x2B; /* 299, 2 blocks */
	r10[8] = 2;
	expect_check(r10, 4096, 5, 0x21);
	expect_check(r12, 4096, 5, 0x21);
	/* buffer smaller than the blocks asked for */
	r10[5] = 0;
	r10[8] = 4;
	expect_check(r10, 2048, 5, 0x24);
}

Test(atapi, read_toc)
{
	uint8_t toc[12] = { 0x43, 0, 0, 0, 0, 0, 0, 0, 100 };

	cr_assert_eq(packet(toc, 100, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 18);
	cr_assert_eq(H.mem[H_DATA + 2], 1);
	cr_assert_eq(H.mem[H_DATA + 3], 1);
	cr_assert_eq(H.mem[H_DATA + 4 + 1], 0x14);
	cr_assert_eq(H.mem[H_DATA + 4 + 2], 1);
	cr_assert_eq(get_be32(H.mem + H_DATA + 8), 0);
	cr_assert_eq(H.mem[H_DATA + 12 + 2], 0xAA);
	cr_assert_eq(get_be32(H.mem + H_DATA + 16), ISO_BLOCKS);
	/* MSF: track 1 at 00:02:00, lead-out at 300+150 frames = 00:06:00 */
	toc[1] = 0x02;
	cr_assert_eq(packet(toc, 100, false), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA + 8), 0x00000200);
	cr_assert_eq(get_be32(H.mem + H_DATA + 16), 0x00000600);
	/* starting at the lead-out only */
	toc[1] = 0;
	toc[6] = 0xAA;
	cr_assert_eq(packet(toc, 100, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 10);
	/* no such track */
	toc[6] = 5;
	expect_check(toc, 100, 5, 0x24);
	/* session info (format 1), also in the old place (byte 9) */
	uint8_t sess[12] = { 0x43, 0, 1, 0, 0, 0, 0, 0, 12 };
	cr_assert_eq(packet(sess, 12, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 10);
	cr_assert_eq(H.mem[H_DATA + 6], 1);
	uint8_t sess_old[12] = { 0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40 };
	cr_assert_eq(packet(sess_old, 12, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 10);
	/* full TOC (format 2): A0, A1, A2, track 1 */
	uint8_t full[12] = { 0x43, 2, 2, 0, 0, 0, 0, 0, 200 };
	cr_assert_eq(packet(full, 200, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 2 + 4 * 11);
	cr_assert_eq(H.mem[H_DATA + 4 + 3], 0xA0);
	cr_assert_eq(H.mem[H_DATA + 4 + 22 + 3], 0xA2);
	cr_assert_eq(H.mem[H_DATA + 4 + 22 + 9], 6, "lead-out 00:06:00");
	/* unsupported format */
	uint8_t bad[12] = { 0x43, 0, 5, 0, 0, 0, 0, 0, 100 };
	expect_check(bad, 100, 5, 0x24);
}

Test(atapi, get_configuration)
{
	uint8_t all[12] = { 0x46, 0, 0, 0, 0, 0, 0, 1, 0 };

	cr_assert_eq(packet(all, 256, false), 0x50);
	uint32_t len = get_be32(H.mem + H_DATA);
	cr_assert(len > 8 && len < 256);
	cr_assert_eq(get_be16(H.mem + H_DATA + 6), 0x0008, "CD-ROM profile");
	/* feature 0: profile list, current CD-ROM */
	cr_assert_eq(get_be16(H.mem + H_DATA + 8), 0x0000);
	cr_assert_eq(get_be16(H.mem + H_DATA + 12), 0x0010);
	cr_assert_eq(get_be16(H.mem + H_DATA + 16), 0x0008);
	cr_assert_eq(H.mem[H_DATA + 18] & 1, 1);
	/* RT=2: exactly one feature */
	uint8_t one[12] = { 0x46, 2, 0x00, 0x03, 0, 0, 0, 1, 0 };
	cr_assert_eq(packet(one, 256, false), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), 4 + 8);
	cr_assert_eq(get_be16(H.mem + H_DATA + 8), 0x0003);
	/* RT=1 from 0x10: current features only (no DVD read) */
	uint8_t cur[12] = { 0x46, 1, 0x00, 0x10, 0, 0, 0, 1, 0 };
	cr_assert_eq(packet(cur, 256, false), 0x50);
	len = get_be32(H.mem + H_DATA) + 4;
	for (uint32_t off = 8; off < len; off += 4 + H.mem[H_DATA + off + 3]) {
		cr_assert_neq(get_be16(H.mem + H_DATA + off), 0x001F);
		cr_assert_eq(H.mem[H_DATA + off + 2] & 1, 1);
	}
	/* header only */
	all[8] = 8;
	all[7] = 0;
	cr_assert_eq(packet(all, 256, false), 0x50);
	cr_assert_eq(transferred(), 8);
	uint8_t bad[12] = { 0x46, 3 };
	expect_check(bad, 64, 5, 0x24);
}

Test(atapi, mode_sense_and_mechanism)
{
	uint8_t caps[12] = { 0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 64 };

	cr_assert_eq(packet(caps, 64, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 6 + 22);
	cr_assert_eq(H.mem[H_DATA + 8], 0x2A);
	cr_assert_eq(H.mem[H_DATA + 9], 0x14);
	cr_assert(H.mem[H_DATA + 8 + 6] & 0x08, "eject supported");
	uint8_t allp[12] = { 0x5A, 0, 0x3F, 0, 0, 0, 0, 0, 64 };
	cr_assert_eq(packet(allp, 64, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 6 + 8 + 22);
	uint8_t saved[12] = { 0x5A, 0, 0xEA, 0, 0, 0, 0, 0, 64 };
	expect_check(saved, 64, 5, 0x39);
	uint8_t unknown[12] = { 0x5A, 0, 0x05, 0, 0, 0, 0, 0, 64 };
	expect_check(unknown, 64, 5, 0x24);
	uint8_t mech[12] = { 0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8 };
	cr_assert_eq(packet(mech, 8, false), 0x50);
	cr_assert_eq(H.mem[H_DATA + 1] & 0x10, 0, "tray closed");
	uint8_t disc[12] = { 0x51, 0, 0, 0, 0, 0, 0, 0, 34 };
	cr_assert_eq(packet(disc, 34, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA), 32);
	cr_assert_eq(H.mem[H_DATA + 2] & 3, 2, "complete disc");
	disc[1] = 1;
	expect_check(disc, 34, 5, 0x24);
}

Test(atapi, eject_and_media_change)
{
	uint8_t tur[12] = { 0x00 };
	uint8_t gesn[12] = { 0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8 };
	uint8_t prevent[12] = { 0x1E, 0, 0, 0, 1 };
	uint8_t eject[12] = { 0x1B, 0, 0, 0, 0x02 };
	uint8_t load[12] = { 0x1B, 0, 0, 0, 0x03 };

	cr_assert_eq(packet(gesn, 8, false), 0x50);
	cr_assert_eq(H.mem[H_DATA + 2], 0x04, "media class");
	cr_assert_eq(H.mem[H_DATA + 5], 0x02, "medium present, door shut");
	/* locked: eject refused */
	cr_assert_eq(packet(prevent, 0, false), 0x50);
	expect_check(eject, 0, 5, 0x53);
	prevent[4] = 0;
	cr_assert_eq(packet(prevent, 0, false), 0x50);
	/* the guest's own eject */
	cr_assert_eq(packet(eject, 0, false), 0x50);
	expect_check(tur, 0, 2, 0x3A);
	cr_assert_eq(packet(gesn, 8, false), 0x50);
	cr_assert_eq(H.mem[H_DATA + 4], 3, "media removal event");
	cr_assert_eq(H.mem[H_DATA + 5], 0x01, "door open, no medium");
	cr_assert_eq(packet(gesn, 8, false), 0x50);
	cr_assert_eq(H.mem[H_DATA + 4], 0, "event reported once");
	uint8_t mech[12] = { 0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8 };
	cr_assert_eq(packet(mech, 8, false), 0x50);
	cr_assert(H.mem[H_DATA + 1] & 0x10, "tray open");
	/* the disc is gone for good: reads and capacity say so */
	uint8_t r10[12] = { 0x28, 0, 0, 0, 0, 0, 0, 0, 1 };
	expect_check(r10, 2048, 2, 0x3A);
	uint8_t cap[12] = { 0x25 };
	expect_check(cap, 8, 2, 0x3A);
	cr_assert_eq(packet(load, 0, false), 0x50);
	expect_check(tur, 0, 2, 0x3A);
	uint8_t cfg[12] = { 0x46, 0, 0, 0, 0, 0, 0, 0, 64 };
	cr_assert_eq(packet(cfg, 64, false), 0x50);
	cr_assert_eq(get_be16(H.mem + H_DATA + 6), 0, "no current profile");
}

Test(atapi, host_eject_reports_unit_attention)
{
	uint8_t tur[12] = { 0x00 };
	uint8_t inquiry[12] = { 0x12, 0, 0, 0, 36 };

	cr_assert_eq(packet(tur, 0, false), 0x50);
	ahci_eject_cdrom(H.ahci);
	/* INQUIRY does not report the unit attention */
	cr_assert_eq(packet(inquiry, 36, false), 0x50);
	expect_check(tur, 0, 6, 0x28);
	expect_check(tur, 0, 2, 0x3A);
	/* and it stays empty across a platform reset */
	H.reset_fn(H.reset_opaque);
	h_start_port(&H, CD);
	expect_check(tur, 0, 2, 0x3A);
}

Test(atapi, unknown_and_hostile_packets)
{
	uint8_t cdb[12];

	/* opcodes nobody implements here: ILLEGAL REQUEST, invalid opcode */
	static const uint8_t unknown[] = { 0x01, 0x04, 0x0A, 0x15, 0x2A,
					   0x35, 0x55, 0xA1, 0xAD, 0xFF };
	for (unsigned i = 0; i < sizeof(unknown); i++) {
		memset(cdb, 0, sizeof(cdb));
		cdb[0] = unknown[i];
		expect_check(cdb, 64, 5, 0x20);
	}
	/* GET EVENT STATUS in asynchronous mode is refused */
	uint8_t gesn[12] = { 0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8 };
	expect_check(gesn, 8, 5, 0x24);
	/* random packets and buffers: every one completes with a status,
	 * nothing is written outside the buffer */
	srand(42);
	for (unsigned round = 0; round < 5000; round++) {
		uint32_t buffer = 2 + 2 * (rand() % 4096);

		for (unsigned i = 0; i < 12; i++)
			cdb[i] = (uint8_t)rand();
		if (round % 3 == 0)
			cdb[0] = (uint8_t)(0x00 + (rand() % 0x60));
		if (cdb[0] == 0x1B)
			cdb[0] = 0x00; /* keep the disc in */
		H.mem[H_DATA + buffer] = 0x77;
		uint8_t status = packet(cdb, buffer, rand() & 1);
		cr_assert(status == 0x50 || status == 0x41, "status %02x",
			  status);
		cr_assert(transferred() <= buffer);
		cr_assert_eq(H.mem[H_DATA + buffer], 0x77,
			     "write past the buffer (opcode %02x)", cdb[0]);
	}
	/* still a working drive */
	uint8_t r10[12] = { 0x28, 0, 0, 0, 0, 9, 0, 0, 1 };
	uint8_t tur[12] = { 0 };
	for (unsigned i = 0; i < 3 && packet(tur, 0, false) != 0x50; i++)
		request_sense();
	cr_assert_eq(packet(tur, 0, false), 0x50);
	cr_assert_eq(packet(r10, 2048, true), 0x50);
	cr_assert_eq(get_be32(H.mem + H_DATA), 9);
}
