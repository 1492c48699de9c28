/* SPDX-License-Identifier: MIT */
/*
 * VMDK driver internals shared by the driver files and the unit tests:
 * the text descriptor model (parse and write), sparse-header validation,
 * geometry and the stream-marker codec.  All pure functions.
 */
#ifndef FORMATS_VMDK_INTERNAL_H
#define FORMATS_VMDK_INTERNAL_H

#include "vmdk_ondisk.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMDK_CID_NONE 0xffffffffu
/* VMware's largest extent in the twoGbMax* subformats: 2 GiB - 1 MiB. */
#define VMDK_SPLIT_EXTENT_SECTORS UINT64_C(4192256)
#define VMDK_DEFAULT_GRAIN_SECTORS 128u
#define VMDK_GTES_PER_GT 512u
#define VMDK_EMBEDDED_DESC_SECTORS 20u
#define VMDK_DESC_MAX_BYTES (1u << 20)

enum vmdk_access { VMDK_ACCESS_RW, VMDK_ACCESS_RDONLY, VMDK_ACCESS_NOACCESS };

enum vmdk_extent_type {
	VMDK_EXTENT_SPARSE,
	VMDK_EXTENT_FLAT,
	VMDK_EXTENT_ZERO,
	VMDK_EXTENT_VMFS,	/* flat extent on VMFS */
	VMDK_EXTENT_VMFSSPARSE, /* COWD sparse extent */
	VMDK_EXTENT_SESPARSE,
};

struct vmdk_desc_extent {
	enum vmdk_access access;
	uint64_t sectors;
	enum vmdk_extent_type type;
	char *filename;	 /* NULL for ZERO */
	uint64_t offset; /* sectors into the file (flat extents) */
};

/* One "key = value" line kept in order (DDB and unknown header keys). */
struct vmdk_desc_kv {
	char *key;
	char *value; /* unquoted */
	bool quoted;
};

struct vmdk_desc {
	int version;
	uint32_t cid;
	uint32_t parent_cid;
	char create_type[64];
	char *parent_hint; /* parentFileNameHint, NULL when absent */
	char *encoding;	   /* NULL when absent */
	int nextents;
	struct vmdk_desc_extent *extents;
	int nheader_kv; /* unknown keys before the extents, kept */
	struct vmdk_desc_kv *header_kv;
	int nddb; /* ddb.* and other keys after the extents, kept */
	struct vmdk_desc_kv *ddb;
};

/* Parse text (len bytes, need not be NUL-terminated).  On error returns
 * -EINVAL and a message in err ("line 7: bad extent line ..."). */
int vmdk_desc_parse(struct vmdk_desc *d, const char *text, size_t len,
		    char *err, size_t errlen);
void vmdk_desc_free(struct vmdk_desc *d);
/* Writes the descriptor in VMware's layout into a malloc'ed string. */
int vmdk_desc_format(const struct vmdk_desc *d, char **out, size_t *outlen);
const char *vmdk_desc_get(const struct vmdk_desc *d, const char *key);
int vmdk_desc_set(struct vmdk_desc *d, const char *key, const char *value);
int vmdk_desc_add_extent(struct vmdk_desc *d, enum vmdk_access access,
			 uint64_t sectors, enum vmdk_extent_type type,
			 const char *filename, uint64_t offset);
int vmdk_desc_set_parent_hint(struct vmdk_desc *d, const char *hint);
uint64_t vmdk_desc_total_sectors(const struct vmdk_desc *d);
const char *vmdk_extent_type_name(enum vmdk_extent_type t);

/* Checks a sparse header (host order) against the extent file's size;
 * fills *gd_entries.  Returns 0 or -EINVAL with a message naming the
 * field.  stream_footer: the header is a footer (gd_offset must be real). */
int vmdk_sparse_header_validate(const struct vmdk_sparse_header *h,
				uint64_t file_size, uint32_t *gd_entries,
				char *err, size_t errlen);
/* The header our create writes (host order). */
void vmdk_sparse_header_init(struct vmdk_sparse_header *h, uint64_t capacity,
			     uint32_t grain_sectors, bool embedded_desc,
			     bool stream, bool zero_grain);
/* Sectors needed for one grain table and for a directory of n entries. */
uint64_t vmdk_gt_sectors(uint32_t gtes_per_gt);
uint64_t vmdk_gd_sectors(uint32_t gd_entries);
uint32_t vmdk_gd_entries_for(uint64_t capacity, uint32_t grain_sectors,
			     uint32_t gtes_per_gt);

/* BIOS-style geometry VMware writes for a disk of this many sectors. */
void vmdk_geometry(uint64_t sectors, const char *adapter, uint32_t *cyl,
		   uint32_t *heads, uint32_t *secs);

/* Stream markers: fill a 512-byte metadata marker (disk order). */
void vmdk_meta_marker_init(struct vmdk_meta_marker *m, enum vmdk_marker_type t,
			   uint64_t num_sectors);
/* Classify the 512 bytes at a marker position: returns the marker type, or
 * -1 for a grain marker (lba and size filled). */
int vmdk_marker_parse(const void *sector, uint64_t *lba, uint32_t *size);

/* "60 00 C2 9b ..." (ddb.uuid) <-> 16 bytes. */
int vmdk_uuid_parse(const char *text, uint8_t uuid[16]);
void vmdk_uuid_format_ddb(const uint8_t uuid[16], char out[48]);

#endif
