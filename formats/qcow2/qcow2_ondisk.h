/* SPDX-License-Identifier: MIT */
/*
 * qcow2 on-disk structures, from QEMU's docs/interop/qcow2.txt: the header
 * (versions 2 and 3), header extensions, L1/L2 entries (standard and
 * extended), refcount blocks and the snapshot table.
 *
 * Everything on disk is big-endian.  The header is decoded into host order
 * once (qcow2_header_decode) and encoded back (qcow2_header_encode); table
 * entries are converted where they are loaded and stored.
 */
#ifndef FORMATS_QCOW2_ONDISK_H
#define FORMATS_QCOW2_ONDISK_H

#include "driver.h"

#include <stdint.h>
#include <string.h>

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_DEFAULT_CLUSTER_BITS 16
#define QCOW2_V2_HEADER_SIZE 72u
#define QCOW2_V3_HEADER_SIZE 104u
#define QCOW2_MAX_BACKING_NAME 1023u
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS 65536u

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN                                     \
	(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT |         \
	 QCOW2_INCOMPAT_DATA_FILE | QCOW2_INCOMPAT_COMPRESSION | \
	 QCOW2_INCOMPAT_EXTL2)
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

#define QCOW2_CRYPT_NONE 0u
#define QCOW2_CRYPT_AES 1u
#define QCOW2_CRYPT_LUKS 2u

#define QCOW2_COMPRESSION_ZLIB 0u
#define QCOW2_COMPRESSION_ZSTD 1u

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_EXT_DATA_FILE 0x44415441u

/* Feature-name table entry: type, bit number, name (NUL-padded). */
#define QCOW2_FEATURE_ENTRY_SIZE 48u
#define QCOW2_FEATURE_INCOMPAT 0u
#define QCOW2_FEATURE_COMPAT 1u
#define QCOW2_FEATURE_AUTOCLEAR 2u

/* L1 entries: bits 9-55 the L2 table's offset, bit 63 COPIED. */
#define QCOW2_OFLAG_COPIED (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO (1ull << 0)
#define QCOW2_OFFSET_MASK 0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED 0x7f000000000001ffull
/* Standard L2 entries: bits 56-61 and 1-8 are reserved. */
#define QCOW2_L2_RESERVED 0x3f000000000001feull

/* Extended L2 entries: 32 subclusters, bitmap bits 0-31 allocated,
 * 32-63 reads as zero. */
#define QCOW2_SUBCLUSTERS 32u
#define QCOW2_SC_ALLOC_ALL 0x00000000ffffffffull
#define QCOW2_SC_ZERO_ALL 0xffffffff00000000ull

/* Refcount table entries: bits 9-63 a refcount block's offset. */
#define QCOW2_REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define QCOW2_REFT_RESERVED 0x1ffull

/* Snapshot table entry (fixed part); extra data then id and name follow,
 * the whole padded to 8 bytes. */
struct qcow2_snapshot_disk {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint16_t id_str_size;
	uint16_t name_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size;
	uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_snapshot_disk) == 40, "snapshot entry");

/* The header's fields after the magic, in their order on disk: (bits,
 * name).  Version 2 has the first list only. */
#define QCOW2_HEADER_V2_FIELDS(X)      \
	X(32, version)                 \
	X(64, backing_file_offset)     \
	X(32, backing_file_size)       \
	X(32, cluster_bits)            \
	X(64, size)                    \
	X(32, crypt_method)            \
	X(32, l1_size)                 \
	X(64, l1_table_offset)         \
	X(64, refcount_table_offset)   \
	X(32, refcount_table_clusters) \
	X(32, nb_snapshots)            \
	X(64, snapshots_offset)
#define QCOW2_HEADER_V3_FIELDS(X)    \
	X(64, incompatible_features) \
	X(64, compatible_features)   \
	X(64, autoclear_features)    \
	X(32, refcount_order)        \
	X(32, header_length)
#define QCOW2_HEADER_FIELD(bits, name) uint##bits##_t name;

/* The header as stored (versions 2 and 3; v2 ends at incompatible). */
struct qcow2_header_disk {
	uint32_t magic;
	QCOW2_HEADER_V2_FIELDS(QCOW2_HEADER_FIELD)
	QCOW2_HEADER_V3_FIELDS(QCOW2_HEADER_FIELD)
	uint8_t compression_type;
	uint8_t padding[7];
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_header_disk) == 112, "qcow2 header");

/* The header in host order. */
struct qcow2_header {
	QCOW2_HEADER_V2_FIELDS(QCOW2_HEADER_FIELD)
	QCOW2_HEADER_V3_FIELDS(QCOW2_HEADER_FIELD)
	uint8_t compression_type;
};

#define QCOW2_HEADER_DECODE(bits, name) h->name = IMG_BE##bits(d->name);
#define QCOW2_HEADER_ENCODE(bits, name) d->name = IMG_BE##bits(h->name);

static inline void qcow2_header_decode(struct qcow2_header *h,
				       const struct qcow2_header_disk *d)
{
	memset(h, 0, sizeof(*h));
	QCOW2_HEADER_V2_FIELDS(QCOW2_HEADER_DECODE)
	if (h->version < 3) {
		/* Version 2 fixes what version 3 records. */
		h->refcount_order = 4;
		h->header_length = QCOW2_V2_HEADER_SIZE;
		return;
	}
	QCOW2_HEADER_V3_FIELDS(QCOW2_HEADER_DECODE)
	if (h->header_length > QCOW2_V3_HEADER_SIZE)
		h->compression_type = d->compression_type;
}

/* Encodes the fields of h's version; returns the bytes to write. */
static inline size_t qcow2_header_encode(struct qcow2_header_disk *d,
					 const struct qcow2_header *h)
{
	memset(d, 0, sizeof(*d));
	d->magic = IMG_BE32(QCOW2_MAGIC);
	QCOW2_HEADER_V2_FIELDS(QCOW2_HEADER_ENCODE)
	if (h->version < 3)
		return QCOW2_V2_HEADER_SIZE;
	QCOW2_HEADER_V3_FIELDS(QCOW2_HEADER_ENCODE)
	if (h->header_length > QCOW2_V3_HEADER_SIZE)
		d->compression_type = h->compression_type;
	return h->header_length < sizeof(*d) ? h->header_length : sizeof(*d);
}

/* Refcount block entry i of width 1 << order bits (sub-byte widths pack
 * the first entry into the least significant bits). */
static inline uint64_t qcow2_refblock_get(const uint8_t *block, unsigned order,
					  uint64_t i)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << order;
		unsigned shift = (unsigned)((i * bits) % 8);

		return (block[i * bits / 8] >> shift) & ((1u << bits) - 1);
	}
	case 3:
		return block[i];
	case 4: {
		uint16_t v;

		memcpy(&v, block + i * 2, 2);
		return IMG_BE16(v);
	}
	case 5: {
		uint32_t v;

		memcpy(&v, block + i * 4, 4);
		return IMG_BE32(v);
	}
	default: {
		uint64_t v;

		memcpy(&v, block + i * 8, 8);
		return IMG_BE64(v);
	}
	}
}

static inline void qcow2_refblock_set(uint8_t *block, unsigned order,
				      uint64_t i, uint64_t value)
{
	switch (order) {
	case 0:
	case 1:
	case 2: {
		unsigned bits = 1u << order;
		unsigned shift = (unsigned)((i * bits) % 8);
		uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
		uint8_t *b = &block[i * bits / 8];

		*b = (uint8_t)((*b & ~mask) | ((value << shift) & mask));
		break;
	}
	case 3:
		block[i] = (uint8_t)value;
		break;
	case 4: {
		uint16_t v = IMG_BE16(value);

		memcpy(block + i * 2, &v, 2);
		break;
	}
	case 5: {
		uint32_t v = IMG_BE32(value);

		memcpy(block + i * 4, &v, 4);
		break;
	}
	default: {
		uint64_t v = IMG_BE64(value);

		memcpy(block + i * 8, &v, 8);
		break;
	}
	}
}

#endif
