/* SPDX-License-Identifier: MIT */
/*
 * Partition tables of a virtual disk: MBR (with extended/logical
 * partitions) and GPT.  Numbering follows Linux: MBR slots 1-4, logical
 * partitions from 5; GPT entry index + 1.
 */
#ifndef FUSE_PARTITION_H
#define FUSE_PARTITION_H

#include <stddef.h>
#include <stdint.h>

#define PARTITION_SECTOR 512u
#define PARTITION_MAX 128

enum partition_scheme { PARTITION_NONE, PARTITION_MBR, PARTITION_GPT };

struct partition {
	int number;	  /* the N of partN */
	uint64_t start;	  /* bytes */
	uint64_t length;  /* bytes, > 0, start + length <= disk size */
	uint8_t mbr_type; /* 0 for GPT */
};

struct partition_table {
	enum partition_scheme scheme;
	int count;
	struct partition parts[PARTITION_MAX];
};

/* Reads len bytes at off of the disk: 0 or -errno. */
typedef int (*partition_read_fn)(void *opaque, void *buf, size_t len,
				 uint64_t off);

/* Fills table; a disk without a (valid) table gives scheme NONE and no
 * partitions.  Entries that lie outside the disk are dropped, ones that
 * run past its end are cut at the end.  -errno only when a read fails. */
int partition_table_scan(partition_read_fn read, void *opaque,
			 uint64_t disk_size, struct partition_table *table);

#endif
