/* SPDX-License-Identifier: MIT */
/* Partition-table parsing (fuse/partition.c) on disks built in memory. */
#include "fuse/partition.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define DISK_SIZE (64ull << 20)
#define SECTOR 512u

static uint8_t *disk;

static int mem_read(void *opaque, void *buf, size_t len, uint64_t off)
{
	uint64_t size = *(uint64_t *)opaque;

	if (off > size || len > size - off)
		return -EIO;
	memcpy(buf, disk + off, len);
	return 0;
}

static void setup(void)
{
	disk = calloc(1, DISK_SIZE);
	cr_assert_not_null(disk);
}

static void teardown(void)
{
	free(disk);
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void mbr_entry(uint64_t sector_lba, int slot, uint8_t type,
		      uint32_t start, uint32_t sectors)
{
	uint8_t *s = disk + sector_lba * SECTOR;
	uint8_t *e = s + 446 + 16 * slot;

	e[4] = type;
	put32(e + 8, start);
	put32(e + 12, sectors);
	s[510] = 0x55;
	s[511] = 0xaa;
}

static int scan(struct partition_table *t, uint64_t size)
{
	return partition_table_scan(mem_read, &size, size, t);
}

TestSuite(partition, .init = setup, .fini = teardown);

Test(partition, no_signature_no_table)
{
	struct partition_table t;

	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_NONE);
	cr_assert_eq(t.count, 0);
}

Test(partition, mbr_two_primaries_exact_ranges)
{
	struct partition_table t;

	mbr_entry(0, 0, 0x83, 2048, 40960);
	mbr_entry(0, 2, 0x83, 43008, 20000);
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_MBR);
	cr_assert_eq(t.count, 2);
	cr_assert_eq(t.parts[0].number, 1);
	cr_assert_eq(t.parts[0].start, 2048ull * 512);
	cr_assert_eq(t.parts[0].length, 40960ull * 512);
	/* slot 3 keeps its number although slot 2 is empty */
	cr_assert_eq(t.parts[1].number, 3);
	cr_assert_eq(t.parts[1].start, 43008ull * 512);
	cr_assert_eq(t.parts[1].length, 20000ull * 512);
	cr_assert_eq(t.parts[1].mbr_type, 0x83);
}

Test(partition, mbr_extended_with_logicals)
{
	struct partition_table t;

	mbr_entry(0, 0, 0x83, 2048, 2048);
	mbr_entry(0, 1, 0x05, 8192, 100000);
	/* first EBR at 8192: logical at +63, next EBR at ext+40000 */
	mbr_entry(8192, 0, 0x83, 63, 10000);
	mbr_entry(8192, 1, 0x05, 40000, 20000);
	/* second EBR: logical at +2048, no next */
	mbr_entry(8192 + 40000, 0, 0x07, 2048, 5000);
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.count, 3);
	cr_assert_eq(t.parts[0].number, 1);
	cr_assert_eq(t.parts[1].number, 5);
	cr_assert_eq(t.parts[1].start, (8192ull + 63) * 512);
	cr_assert_eq(t.parts[1].length, 10000ull * 512);
	cr_assert_eq(t.parts[2].number, 6);
	cr_assert_eq(t.parts[2].start, (8192ull + 40000 + 2048) * 512);
	cr_assert_eq(t.parts[2].length, 5000ull * 512);
	cr_assert_eq(t.parts[2].mbr_type, 0x07);
}

Test(partition, ebr_loop_terminates)
{
	struct partition_table t;

	mbr_entry(0, 0, 0x0f, 4096, 60000);
	mbr_entry(4096, 0, 0x83, 63, 100);
	mbr_entry(4096, 1, 0x05, 1000, 100);
	/* the second EBR points back to the first */
	mbr_entry(4096 + 1000, 0, 0x83, 63, 100);
	mbr_entry(4096 + 1000, 1, 0x05, 0, 100);
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.count, 2);
	cr_assert_eq(t.parts[1].number, 6);
}

Test(partition, ranges_cut_to_the_disk)
{
	struct partition_table t;
	uint64_t sectors = DISK_SIZE / SECTOR;

	mbr_entry(0, 0, 0x83, 2048, 0xffffffffu); /* runs past the end */
	mbr_entry(0, 1, 0x83, 0xfffffff0u, 10);	  /* starts past the end */
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.count, 1);
	cr_assert_eq(t.parts[0].start + t.parts[0].length, DISK_SIZE);
	cr_assert_eq(t.parts[0].length, (sectors - 2048) * SECTOR);
}

Test(partition, bad_status_byte_is_not_an_mbr)
{
	struct partition_table t;

	mbr_entry(0, 0, 0x83, 2048, 100);
	disk[446] = 0x12;
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_NONE);
}

/* A GPT header at lba with its entry array at entries_lba. */
static void gpt_write(uint64_t lba, uint64_t alternate, uint64_t entries_lba,
		      uint32_t count)
{
	uint8_t *h = disk + lba * SECTOR;
	uint8_t *e = disk + entries_lba * SECTOR;

	memset(h, 0, SECTOR);
	memcpy(h, "EFI PART", 8);
	put32(h + 8, 0x00010000);
	put32(h + 12, 92);
	put64(h + 24, lba);
	put64(h + 32, alternate);
	put64(h + 40, 34);
	put64(h + 48, DISK_SIZE / SECTOR - 34);
	put64(h + 72, entries_lba);
	put32(h + 80, count);
	put32(h + 84, 128);
	put32(h + 88, (uint32_t)crc32(0, e, count * 128));
	put32(h + 16, (uint32_t)crc32(0, h, 92));
}

static void gpt_entry(uint64_t entries_lba, int index, uint64_t first,
		      uint64_t last)
{
	uint8_t *e = disk + entries_lba * SECTOR + 128 * index;

	memset(e, 0, 128);
	e[0] = 0xaf; /* any non-zero type GUID */
	e[1] = 0x3d;
	put64(e + 32, first);
	put64(e + 40, last);
}

static void gpt_build(void)
{
	uint64_t last = DISK_SIZE / SECTOR - 1;

	mbr_entry(0, 0, 0xee, 1, 0xffffffffu);
	gpt_entry(2, 0, 2048, 4095);
	gpt_entry(2, 2, 8192, 20479);
	gpt_write(1, last, 2, 128);
	/* backup: entries before the last LBA */
	memcpy(disk + (last - 32) * SECTOR, disk + 2 * SECTOR, 128 * 128);
	gpt_write(last, 1, last - 32, 128);
}

Test(partition, gpt_entries)
{
	struct partition_table t;

	gpt_build();
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_GPT);
	cr_assert_eq(t.count, 2);
	cr_assert_eq(t.parts[0].number, 1);
	cr_assert_eq(t.parts[0].start, 2048ull * 512);
	cr_assert_eq(t.parts[0].length, 2048ull * 512);
	cr_assert_eq(t.parts[1].number, 3);
	cr_assert_eq(t.parts[1].start, 8192ull * 512);
	cr_assert_eq(t.parts[1].length, 12288ull * 512);
}

Test(partition, gpt_backup_used_when_primary_corrupt)
{
	struct partition_table t;

	gpt_build();
	disk[SECTOR + 30] ^= 0xff; /* primary header CRC now wrong */
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_GPT);
	cr_assert_eq(t.count, 2);
	cr_assert_eq(t.parts[1].start, 8192ull * 512);
}

Test(partition, gpt_entry_array_crc_checked)
{
	struct partition_table t;
	uint64_t last = DISK_SIZE / SECTOR - 1;

	gpt_build();
	disk[2 * SECTOR + 40] ^= 1;	      /* primary entries */
	disk[(last - 32) * SECTOR + 40] ^= 1; /* backup entries */
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.scheme, PARTITION_NONE);
	cr_assert_eq(t.count, 0);
}

Test(partition, gpt_absurd_entry_count_rejected)
{
	struct partition_table t;

	gpt_build();
	gpt_write(1, 0, 2, 1u << 30);
	disk[(DISK_SIZE / SECTOR - 1) * SECTOR] = 0; /* no backup either */
	cr_assert_eq(scan(&t, DISK_SIZE), 0);
	cr_assert_eq(t.count, 0);
}

Test(partition, read_errors_propagate)
{
	struct partition_table t;
	uint64_t small = 4096;

	/* reading the EBR fails: it lies past what mem_read serves */
	mbr_entry(0, 0, 0x05, 100, 100000);
	cr_assert_eq(partition_table_scan(mem_read, &small, DISK_SIZE, &t),
		     -EIO);
}
