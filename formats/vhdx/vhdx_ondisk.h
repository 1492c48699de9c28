/* SPDX-License-Identifier: MIT */
/*
 * VHDX on-disk structures and the pure helpers around them (CRC-32C,
 * GUIDs, header, region table, metadata table, log entries, BAT entries).
 *
 * Layouts follow Microsoft's [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File
 * Format", section 2 (file layout, headers 2.2, log 2.3, BAT 2.5,
 * metadata 2.6).  Everything on disk is little-endian; the decode/encode
 * functions in vhdx_codec.c are the only places that convert.
 */
#ifndef FORMATS_VHDX_ONDISK_H
#define FORMATS_VHDX_ONDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHDX_KiB 1024ull
#define VHDX_MiB (1024ull * 1024)
#define VHDX_TiB (1024ull * 1024 * 1024 * 1024)

/* Fixed layout of the header section (2.1). */
#define VHDX_FILE_ID_SIGNATURE "vhdxfile"
#define VHDX_HEADER_SECTION_SIZE VHDX_MiB
#define VHDX_HEADER1_OFFSET (64 * VHDX_KiB)
#define VHDX_HEADER2_OFFSET (128 * VHDX_KiB)
#define VHDX_REGION_TABLE1_OFFSET (192 * VHDX_KiB)
#define VHDX_REGION_TABLE2_OFFSET (256 * VHDX_KiB)
#define VHDX_HEADER_SIZE 4096u		    /* checksummed part of a header */
#define VHDX_REGION_TABLE_SIZE (64 * 1024u) /* checksummed */
#define VHDX_METADATA_TABLE_SIZE (64 * 1024u)
#define VHDX_ALIGN VHDX_MiB /* regions, blocks and the log */
#define VHDX_LOG_SECTOR 4096u
#define VHDX_MAX_REGION_ENTRIES 2047u
#define VHDX_MAX_METADATA_ENTRIES 2047u
#define VHDX_MAX_SIZE (64 * VHDX_TiB)
#define VHDX_MIN_BLOCK_SIZE (1u << 20)
#define VHDX_MAX_BLOCK_SIZE (256u << 20)
/* One sector bitmap block covers 2^23 logical sectors (2.5). */
#define VHDX_SECTOR_BITMAP_BLOCK_SIZE VHDX_MiB
#define VHDX_SECTORS_PER_BITMAP (1u << 23)

#define VHDX_HEADER_SIGNATURE 0x64616568u    /* "head" */
#define VHDX_REGION_SIGNATURE 0x69676572u    /* "regi" */
#define VHDX_LOG_ENTRY_SIGNATURE 0x65676f6cu /* "loge" */
#define VHDX_LOG_ZERO_SIGNATURE 0x6f72657au  /* "zero" */
#define VHDX_LOG_DESC_SIGNATURE 0x63736564u  /* "desc" */
#define VHDX_LOG_DATA_SIGNATURE 0x61746164u  /* "data" */
#define VHDX_METADATA_SIGNATURE "metadata"

/* Payload block states (2.5.1.1) and sector bitmap states (2.5.1.2). */
enum vhdx_block_state {
	VHDX_BLOCK_NOT_PRESENT = 0,
	VHDX_BLOCK_UNDEFINED = 1,
	VHDX_BLOCK_ZERO = 2,
	VHDX_BLOCK_UNMAPPED = 3,
	VHDX_BLOCK_FULLY_PRESENT = 6,
	VHDX_BLOCK_PARTIALLY_PRESENT = 7,
	VHDX_SB_NOT_PRESENT = 0,
	VHDX_SB_PRESENT = 6,
};
#define VHDX_BAT_STATE(e) ((unsigned)((e)&7))
#define VHDX_BAT_OFFSET(e) (((e) >> 20) << 20) /* FileOffsetMB, in bytes */
#define VHDX_BAT_ENTRY(state, off) ((uint64_t)(off) | (uint64_t)(state))
#define VHDX_BAT_RESERVED_MASK 0xffff8ull /* bits 3..19 must be zero */

/* Metadata entry flags (2.6.1.2). */
#define VHDX_META_IS_USER 1u
#define VHDX_META_IS_VIRTUAL_DISK 2u
#define VHDX_META_IS_REQUIRED 4u
/* File parameters flags (2.6.2.1). */
#define VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED 1u
#define VHDX_PARAM_HAS_PARENT 2u

/* GUIDs are stored as Windows lays them out: the first three groups
 * little-endian, the last eight bytes as written. */
struct vhdx_guid {
	uint8_t b[16];
};
#define VHDX_GUID_INIT(d1, d2, d3, a, b_, c, d, e, f, g, h)                   \
	{                                                                     \
		{                                                             \
			(d1) & 0xff, ((d1) >> 8) & 0xff, ((d1) >> 16) & 0xff, \
				((d1) >> 24) & 0xff, (d2)&0xff, (d2) >> 8,    \
				(d3)&0xff, (d3) >> 8, a, b_, c, d, e, f, g, h \
		}                                                             \
	}
extern const struct vhdx_guid vhdx_guid_bat, vhdx_guid_metadata,
	vhdx_guid_file_parameters, vhdx_guid_virtual_disk_size,
	vhdx_guid_page83, vhdx_guid_logical_sector_size,
	vhdx_guid_physical_sector_size, vhdx_guid_parent_locator,
	vhdx_guid_parent_locator_type;

/* Header (2.2.2), 4 KiB checksummed, two copies. */
struct vhdx_header {
	uint32_t signature;
	uint32_t checksum;
	uint64_t sequence;
	struct vhdx_guid file_write_guid;
	struct vhdx_guid data_write_guid;
	struct vhdx_guid log_guid;
	uint16_t log_version;
	uint16_t version;
	uint32_t log_length;
	uint64_t log_offset;
};

/* Region table entry (2.2.3.2). */
struct vhdx_region {
	struct vhdx_guid guid;
	uint64_t offset;
	uint32_t length;
	bool required;
};

/* Metadata table entry (2.6.1.2). */
struct vhdx_metadata_entry {
	struct vhdx_guid item;
	uint32_t offset; /* from the start of the metadata region */
	uint32_t length;
	uint32_t flags;
};

/* Log entry header (2.3.1.1), 64 bytes at the start of an entry. */
#define VHDX_LOG_HEADER_SIZE 64u
#define VHDX_LOG_DESCRIPTOR_SIZE 32u
struct vhdx_log_header {
	uint32_t signature;
	uint32_t checksum;
	uint32_t entry_length;
	uint32_t tail;
	uint64_t sequence;
	uint32_t descriptor_count;
	struct vhdx_guid log_guid;
	uint64_t flushed_file_offset;
	uint64_t last_file_offset;
};

/* Log descriptor (2.3.1.2/2.3.1.3): a zero range or one 4 KiB data
 * sector whose first 8 and last 4 bytes live in the descriptor. */
struct vhdx_log_descriptor {
	uint32_t signature;
	uint32_t trailing;	    /* data: the sector's last 4 bytes */
	uint64_t leading_or_length; /* data: first 8 bytes; zero: length */
	uint64_t file_offset;
	uint64_t sequence;
};

/* ---- helpers (vhdx_codec.c) ----------------------------------------*/

uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* CRC-32C of buf with the 4-byte checksum field at csum_off taken as 0. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);
void vhdx_checksum_set(uint8_t *buf, size_t len, size_t csum_off);
bool vhdx_checksum_ok(const uint8_t *buf, size_t len, size_t csum_off);

bool vhdx_guid_equal(const struct vhdx_guid *a, const struct vhdx_guid *b);
bool vhdx_guid_is_zero(const struct vhdx_guid *g);
void vhdx_guid_generate(struct vhdx_guid *g);
/* "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}" style text (braces optional
 * on input, case-insensitive). */
void vhdx_guid_format(const struct vhdx_guid *g, char out[39], bool braces);
bool vhdx_guid_parse(const char *text, struct vhdx_guid *g);

uint16_t vhdx_get16(const uint8_t *p);
uint32_t vhdx_get32(const uint8_t *p);
uint64_t vhdx_get64(const uint8_t *p);
void vhdx_put16(uint8_t *p, uint16_t v);
void vhdx_put32(uint8_t *p, uint32_t v);
void vhdx_put64(uint8_t *p, uint64_t v);

void vhdx_header_decode(const uint8_t *buf, struct vhdx_header *h);
/* Fills VHDX_HEADER_SIZE bytes with the checksum set. */
void vhdx_header_encode(const struct vhdx_header *h, uint8_t *buf);

/* Region table: count entries at buf (VHDX_REGION_TABLE_SIZE bytes). */
uint32_t vhdx_region_count(const uint8_t *buf);
void vhdx_region_decode(const uint8_t *buf, uint32_t i, struct vhdx_region *r);
/* Encodes a whole 64 KiB table with its checksum. */
void vhdx_region_table_encode(const struct vhdx_region *r, uint32_t n,
			      uint8_t *buf);

uint32_t vhdx_metadata_count(const uint8_t *buf);
void vhdx_metadata_decode(const uint8_t *buf, uint32_t i,
			  struct vhdx_metadata_entry *e);
void vhdx_metadata_table_encode(const struct vhdx_metadata_entry *e, uint32_t n,
				uint8_t *buf);

void vhdx_log_header_decode(const uint8_t *buf, struct vhdx_log_header *h);
void vhdx_log_header_encode(const struct vhdx_log_header *h, uint8_t *buf);
void vhdx_log_descriptor_decode(const uint8_t *buf,
				struct vhdx_log_descriptor *d);
void vhdx_log_descriptor_encode(const struct vhdx_log_descriptor *d,
				uint8_t *buf);
/* Descriptor sectors an entry with n descriptors needs. */
uint32_t vhdx_log_descriptor_sectors(uint32_t n);

/* UTF-16LE <-> UTF-8 (BMP and surrogate pairs); return the length
 * written, or -1 when it does not fit or the input is malformed. */
int vhdx_utf16_to_utf8(const uint8_t *in, size_t in_bytes, char *out,
		       size_t out_max);
int vhdx_utf8_to_utf16(const char *in, uint8_t *out, size_t out_max);

/* Geometry of the BAT (2.5): the chunk ratio, payload blocks, sector
 * bitmap blocks and BAT entries for a disk. */
struct vhdx_bat_geometry {
	uint32_t chunk_ratio;
	uint64_t data_blocks;
	uint64_t bitmap_blocks;
	uint64_t entries;
};
void vhdx_bat_geometry(uint64_t disk_size, uint32_t block_size,
		       uint32_t logical_sector, bool differencing,
		       struct vhdx_bat_geometry *g);

#endif
