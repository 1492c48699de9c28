/* SPDX-License-Identifier: MIT */
/*
 * VMDK on-disk structures, from VMware "Virtual Disk Format 1.1":
 * the hosted sparse extent header (section "Hosted Sparse Extent Header"),
 * the stream-optimized markers ("Stream-Optimized Compressed Sparse
 * Extents") and the ESX "COWD" sparse header (vmfsSparse).
 *
 * Everything on disk is little-endian; the *_to_cpu helpers convert a whole
 * structure in place, and are their own inverse (to-disk is the same call).
 */
#ifndef FORMATS_VMDK_ONDISK_H
#define FORMATS_VMDK_ONDISK_H

#include "driver.h"

#include <stdint.h>

#define VMDK_SECTOR 512u
#define VMDK_SPARSE_MAGIC 0x564d444bu /* "KDMV" read as little-endian */
#define VMDK_COWD_MAGIC 0x44574f43u   /* "COWD" */
#define VMDK_SESPARSE_MAGIC 0xcafebabeu

/* Header flags (bit numbers from the spec). */
#define VMDK_FLAG_NL_DETECT (1u << 0)
#define VMDK_FLAG_REDUNDANT_GT (1u << 1)
#define VMDK_FLAG_ZERO_GRAIN (1u << 2)
#define VMDK_FLAG_COMPRESSED (1u << 16)
#define VMDK_FLAG_MARKERS (1u << 17)

#define VMDK_COMPRESS_NONE 0
#define VMDK_COMPRESS_DEFLATE 1

/* gdOffset value meaning "the grain directory is at the end: read the
 * footer" (streamOptimized). */
#define VMDK_GD_AT_END UINT64_C(0xffffffffffffffff)

/* A grain-table entry of 1 means "reads as zero" when ZERO_GRAIN is set. */
#define VMDK_GTE_ZERO 1u

struct vmdk_sparse_header {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint64_t capacity;	  /* sectors */
	uint64_t grain_size;	  /* sectors */
	uint64_t desc_offset;	  /* sectors, 0: no embedded descriptor */
	uint64_t desc_size;	  /* sectors */
	uint32_t num_gtes_per_gt; /* 512 */
	uint64_t rgd_offset;	  /* sectors, redundant grain directory */
	uint64_t gd_offset;	  /* sectors, or VMDK_GD_AT_END */
	uint64_t overhead;	  /* sectors of metadata before the grains */
	uint8_t unclean_shutdown;
	char single_end_line_char;  /* '\n' */
	char non_end_line_char;	    /* ' ' */
	char double_end_line_char1; /* '\r' */
	char double_end_line_char2; /* '\n' */
	uint16_t compress_algorithm;
	uint8_t pad[433];
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_sparse_header) == 512, "sparse header");

/* The 12-byte prefix of a compressed grain, and of every marker. */
struct vmdk_grain_marker {
	uint64_t lba; /* sectors (grain); for metadata markers: sectors following */
	uint32_t size; /* compressed bytes; 0 for metadata markers */
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_grain_marker) == 12, "grain marker");

enum vmdk_marker_type {
	VMDK_MARKER_EOS = 0,
	VMDK_MARKER_GT = 1,
	VMDK_MARKER_GD = 2,
	VMDK_MARKER_FOOTER = 3,
};

/* A metadata marker fills one sector. */
struct vmdk_meta_marker {
	uint64_t num_sectors;
	uint32_t size; /* always 0 */
	uint32_t type; /* enum vmdk_marker_type */
	uint8_t pad[496];
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_meta_marker) == 512, "metadata marker");

/* ESX 2.x/3.x "COWD" sparse extent (vmfsSparse), read-only support. */
struct vmdk_cowd_header {
	uint32_t magic;
	uint32_t version;
	uint32_t flags;
	uint32_t capacity;   /* sectors */
	uint32_t grain_size; /* sectors */
	uint32_t gd_offset;  /* sectors */
	uint32_t num_gd_entries;
	uint32_t free_sector;
	/* geometry, parent name etc. follow; not needed for reading */
} __attribute__((packed));
_Static_assert(sizeof(struct vmdk_cowd_header) == 32, "COWD header");

#define VMDK_COWD_GTES_PER_GT 4096u

static inline void vmdk_sparse_header_to_cpu(struct vmdk_sparse_header *h)
{
	h->magic = IMG_LE32(h->magic);
	h->version = IMG_LE32(h->version);
	h->flags = IMG_LE32(h->flags);
	h->capacity = IMG_LE64(h->capacity);
	h->grain_size = IMG_LE64(h->grain_size);
	h->desc_offset = IMG_LE64(h->desc_offset);
	h->desc_size = IMG_LE64(h->desc_size);
	h->num_gtes_per_gt = IMG_LE32(h->num_gtes_per_gt);
	h->rgd_offset = IMG_LE64(h->rgd_offset);
	h->gd_offset = IMG_LE64(h->gd_offset);
	h->overhead = IMG_LE64(h->overhead);
	h->compress_algorithm = IMG_LE16(h->compress_algorithm);
}
#define vmdk_sparse_header_to_disk vmdk_sparse_header_to_cpu

static inline void vmdk_cowd_header_to_cpu(struct vmdk_cowd_header *h)
{
	h->magic = IMG_LE32(h->magic);
	h->version = IMG_LE32(h->version);
	h->flags = IMG_LE32(h->flags);
	h->capacity = IMG_LE32(h->capacity);
	h->grain_size = IMG_LE32(h->grain_size);
	h->gd_offset = IMG_LE32(h->gd_offset);
	h->num_gd_entries = IMG_LE32(h->num_gd_entries);
	h->free_sector = IMG_LE32(h->free_sector);
}

#endif
