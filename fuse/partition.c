/* SPDX-License-Identifier: MIT */
/*
 * MBR and GPT parsing.  Layouts: the classic MBR partition entry (16
 * bytes at offset 446, signature 0x55 0xAA at 510), extended boot records
 * chained through their second entry, and the UEFI specification's GPT
 * header (LBA 1, backup at the last LBA) and partition entry array.
 */
#include "partition.h"

#include "driver.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct mbr_entry {
	uint8_t status;
	uint8_t chs_first[3];
	uint8_t type;
	uint8_t chs_last[3];
	uint32_t lba_start;
	uint32_t sectors;
} __attribute__((packed));
_Static_assert(sizeof(struct mbr_entry) == 16, "MBR entry");

struct gpt_header {
	char signature[8]; /* "EFI PART" */
	uint32_t revision;
	uint32_t header_size;
	uint32_t header_crc32;
	uint32_t reserved;
	uint64_t my_lba;
	uint64_t alternate_lba;
	uint64_t first_usable_lba;
	uint64_t last_usable_lba;
	uint8_t disk_guid[16];
	uint64_t entries_lba;
	uint32_t entry_count;
	uint32_t entry_size;
	uint32_t entries_crc32;
} __attribute__((packed));
_Static_assert(sizeof(struct gpt_header) == 92, "GPT header");

struct gpt_entry {
	uint8_t type_guid[16];
	uint8_t unique_guid[16];
	uint64_t first_lba;
	uint64_t last_lba; /* inclusive */
	uint64_t attributes;
	uint16_t name[36];
} __attribute__((packed));
_Static_assert(sizeof(struct gpt_entry) == 128, "GPT entry");

#define MBR_ENTRIES_OFFSET 446
#define MBR_TYPE_GPT_PROTECTIVE 0xee
#define MBR_MAX_LOGICAL 64
/* A GPT entry array larger than this is not one we believe. */
#define GPT_ENTRIES_MAX_BYTES (1u << 20)

static bool mbr_type_is_extended(uint8_t type)
{
	return type == 0x05 || type == 0x0f || type == 0x85;
}

static bool mbr_signature_ok(const uint8_t *sector)
{
	return sector[510] == 0x55 && sector[511] == 0xaa;
}

static void mbr_entry_read(const uint8_t *sector, int slot, struct mbr_entry *e)
{
	memcpy(e, sector + MBR_ENTRIES_OFFSET + 16 * slot, sizeof(*e));
	e->lba_start = IMG_LE32(e->lba_start);
	e->sectors = IMG_LE32(e->sectors);
}

/* Adds a partition, cut to the disk; dropped when nothing is left. */
static void partition_add(struct partition_table *t, uint64_t disk_size,
			  int number, uint64_t start_lba, uint64_t sectors,
			  uint8_t type)
{
	uint64_t start, length;

	if (t->count == PARTITION_MAX || sectors == 0 ||
	    start_lba >= disk_size / PARTITION_SECTOR)
		return;
	start = start_lba * PARTITION_SECTOR;
	length = sectors > (disk_size - start) / PARTITION_SECTOR
			 ? disk_size - start
			 : sectors * PARTITION_SECTOR;
	t->parts[t->count++] = (struct partition){ .number = number,
						   .start = start,
						   .length = length,
						   .mbr_type = type };
}

static int mbr_scan_logical(partition_read_fn read, void *opaque,
			    uint64_t disk_size, uint64_t ext_start,
			    uint64_t ext_sectors, struct partition_table *t)
{
	uint8_t sector[PARTITION_SECTOR];
	uint64_t ebr = ext_start;
	int number = 5;

	for (int i = 0; i < MBR_MAX_LOGICAL; i++) {
		struct mbr_entry logical, next;
		int r;

		if (ebr >= disk_size / PARTITION_SECTOR)
			break;
		r = read(opaque, sector, sizeof(sector),
			 ebr * PARTITION_SECTOR);
		if (r < 0)
			return r;
		if (!mbr_signature_ok(sector))
			break;
		mbr_entry_read(sector, 0, &logical);
		mbr_entry_read(sector, 1, &next);
		/* The logical partition is relative to its EBR. */
		if (logical.type && logical.sectors)
			partition_add(t, disk_size, number++,
				      ebr + logical.lba_start, logical.sectors,
				      logical.type);
		/* The next EBR is relative to the extended partition and
		 * must lie inside it, past the start (no loops back). */
		if (!mbr_type_is_extended(next.type) || next.lba_start == 0 ||
		    next.lba_start >= ext_sectors)
			break;
		ebr = ext_start + next.lba_start;
	}
	return 0;
}

static int gpt_try(partition_read_fn read, void *opaque, uint64_t disk_size,
		   uint64_t lba, struct partition_table *t)
{
	uint8_t sector[PARTITION_SECTOR];
	struct gpt_header h;
	uint64_t disk_sectors = disk_size / PARTITION_SECTOR, bytes;
	uint8_t *entries = NULL;
	uint32_t crc, saved;
	int r;

	r = read(opaque, sector, sizeof(sector), lba * PARTITION_SECTOR);
	if (r < 0)
		return r;
	memcpy(&h, sector, sizeof(h));
	if (memcmp(h.signature, "EFI PART", 8))
		return -EINVAL;
	h.header_size = IMG_LE32(h.header_size);
	if (h.header_size < sizeof(h) || h.header_size > PARTITION_SECTOR)
		return -EINVAL;
	/* The CRC covers header_size bytes with the CRC field zeroed. */
	saved = IMG_LE32(h.header_crc32);
	memset(sector + 16, 0, 4);
	crc = (uint32_t)crc32(0, sector, h.header_size);
	if (crc != saved)
		return -EINVAL;
	h.my_lba = IMG_LE64(h.my_lba);
	h.entries_lba = IMG_LE64(h.entries_lba);
	h.entry_count = IMG_LE32(h.entry_count);
	h.entry_size = IMG_LE32(h.entry_size);
	h.entries_crc32 = IMG_LE32(h.entries_crc32);
	if (h.my_lba != lba || h.entry_size < sizeof(struct gpt_entry) ||
	    h.entry_size % 8 || h.entry_count == 0)
		return -EINVAL;
	bytes = (uint64_t)h.entry_count * h.entry_size;
	if (bytes > GPT_ENTRIES_MAX_BYTES || h.entries_lba >= disk_sectors ||
	    bytes > (disk_sectors - h.entries_lba) * PARTITION_SECTOR)
		return -EINVAL;
	entries = malloc(bytes);
	if (!entries)
		return -ENOMEM;
	r = read(opaque, entries, bytes, h.entries_lba * PARTITION_SECTOR);
	if (r < 0)
		goto out;
	if ((uint32_t)crc32(0, entries, (uInt)bytes) != h.entries_crc32) {
		r = -EINVAL;
		goto out;
	}
	t->count = 0;
	for (uint32_t i = 0; i < h.entry_count; i++) {
		struct gpt_entry e;
		static const uint8_t unused[16];
		memcpy(&e, entries + (size_t)i * h.entry_size, sizeof(e));
		if (!memcmp(e.type_guid, unused, 16))
			continue;
		e.first_lba = IMG_LE64(e.first_lba);
		e.last_lba = IMG_LE64(e.last_lba);
		if (e.last_lba < e.first_lba)
			continue;
		partition_add(t, disk_size, (int)i + 1, e.first_lba,
			      e.last_lba - e.first_lba + 1, 0);
	}
	t->scheme = PARTITION_GPT;
	r = 0;
out:
	free(entries);
	return r;
}

int partition_table_scan(partition_read_fn read, void *opaque,
			 uint64_t disk_size, struct partition_table *t)
{
	uint8_t mbr[PARTITION_SECTOR];
	struct mbr_entry e[4];
	bool protective = false;
	int r;

	memset(t, 0, sizeof(*t));
	if (disk_size < 2 * PARTITION_SECTOR)
		return 0;
	r = read(opaque, mbr, sizeof(mbr), 0);
	if (r < 0)
		return r;
	if (!mbr_signature_ok(mbr))
		return 0;
	for (int i = 0; i < 4; i++) {
		mbr_entry_read(mbr, i, &e[i]);
		protective |= e[i].type == MBR_TYPE_GPT_PROTECTIVE;
	}
	if (protective) {
		/* Primary header at LBA 1, else the backup at the end. */
		r = gpt_try(read, opaque, disk_size, 1, t);
		if (r == -EINVAL)
			r = gpt_try(read, opaque, disk_size,
				    disk_size / PARTITION_SECTOR - 1, t);
		if (r == -EINVAL) {
			memset(t, 0, sizeof(*t));
			return 0;
		}
		return r;
	}
	/* An MBR entry with a bad status byte is most likely not an MBR at
	 * all (a boot sector of a file system has 0x55aa too). */
	for (int i = 0; i < 4; i++)
		if (e[i].status != 0 && e[i].status != 0x80)
			return 0;
	t->scheme = PARTITION_MBR;
	for (int i = 0; i < 4; i++) {
		if (!e[i].type || !e[i].sectors)
			continue;
		if (mbr_type_is_extended(e[i].type)) {
			r = mbr_scan_logical(read, opaque, disk_size,
					     e[i].lba_start, e[i].sectors, t);
			if (r < 0)
				return r;
			continue;
		}
		partition_add(t, disk_size, i + 1, e[i].lba_start, e[i].sectors,
			      e[i].type);
	}
	/* Logical partitions were added while walking the slots; keep the
	 * list in partition-number order. */
	for (int i = 1; i < t->count; i++)
		for (int j = i;
		     j > 0 && t->parts[j - 1].number > t->parts[j].number;
		     j--) {
			struct partition tmp = t->parts[j];
			t->parts[j] = t->parts[j - 1];
			t->parts[j - 1] = tmp;
		}
	return 0;
}
