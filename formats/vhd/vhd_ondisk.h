/* SPDX-License-Identifier: MIT */
/*
 * VHD on-disk structures and the pure helpers around them (checksum, CHS
 * geometry, UTF-16 names, sector bitmaps, parent locator paths).
 *
 * Layouts follow Microsoft's "Virtual Hard Disk Image Format
 * Specification" (October 2006): "Hard Disk Footer Format" and "Dynamic
 * Disk Header Format".  Everything on disk is big-endian; the
 * vhd_*_decode/encode functions are the only places that convert.
 */
#ifndef FORMATS_VHD_ONDISK_H
#define FORMATS_VHD_ONDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VHD_SECTOR 512u
#define VHD_FOOTER_SIZE 512u
#define VHD_HEADER_SIZE 1024u
#define VHD_FOOTER_COOKIE "conectix"
#define VHD_HEADER_COOKIE "cxsparse"
#define VHD_VERSION 0x00010000u
#define VHD_FEATURE_RESERVED 0x00000002u /* always set */
#define VHD_NO_OFFSET UINT64_MAX	 /* fixed disks' data offset */
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_DEFAULT_BLOCK_SIZE (2u * 1024 * 1024)
#define VHD_MAX_LOCATORS 8
/* Seconds between the Unix epoch and 2000-01-01 00:00:00 UTC. */
#define VHD_EPOCH_OFFSET 946684800u
/* The largest CHS geometry: 65535 cylinders, 16 heads, 255 sectors. */
#define VHD_MAX_CHS_SECTORS (65535ull * 16 * 255)
/* Largest disk we create (Hyper-V's and Virtual Server's limit). */
#define VHD_MAX_SIZE (2040ull << 30)

enum vhd_disk_type {
	VHD_TYPE_FIXED = 2,
	VHD_TYPE_DYNAMIC = 3,
	VHD_TYPE_DIFFERENCING = 4,
};

/* Host OS and platform codes are four ASCII letters read big-endian. */
#define VHD_CODE(a, b, c, d)                                              \
	((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | \
	 (uint32_t)(d))
#define VHD_OS_WINDOWS VHD_CODE('W', 'i', '2', 'k')
#define VHD_PLATFORM_W2RU VHD_CODE('W', '2', 'r', 'u') /* relative, UTF-16LE */
#define VHD_PLATFORM_W2KU VHD_CODE('W', '2', 'k', 'u') /* absolute, UTF-16LE */
#define VHD_PLATFORM_WI2R VHD_CODE('W', 'i', '2', 'r') /* deprecated, ANSI */
#define VHD_PLATFORM_WI2K VHD_CODE('W', 'i', '2', 'k') /* deprecated, ANSI */
#define VHD_PLATFORM_MACX VHD_CODE('M', 'a', 'c', 'X') /* file:// URL, UTF-8 */

/* Hard Disk Footer, 512 bytes, at the end of every image (and copied to
 * offset 0 of dynamic and differencing images). */
struct vhd_footer_disk {
	char cookie[8];
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;
	uint32_t timestamp;
	char creator_app[4];
	uint32_t creator_version;
	uint32_t creator_host_os;
	uint64_t original_size;
	uint64_t current_size;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors_per_track;
	uint32_t disk_type;
	uint32_t checksum;
	uint8_t uuid[16];
	uint8_t saved_state;
	uint8_t reserved[427];
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_footer_disk) == VHD_FOOTER_SIZE,
	       "VHD footer is 512 bytes");

struct vhd_locator_disk {
	uint32_t platform_code;
	uint32_t data_space;
	uint32_t data_length;
	uint32_t reserved;
	uint64_t data_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_locator_disk) == 24, "VHD locator entry");

/* Dynamic Disk Header, 1024 bytes, at the footer's data offset. */
struct vhd_header_disk {
	char cookie[8];
	uint64_t data_offset;
	uint64_t table_offset;
	uint32_t header_version;
	uint32_t max_table_entries;
	uint32_t block_size;
	uint32_t checksum;
	uint8_t parent_uuid[16];
	uint32_t parent_timestamp;
	uint32_t reserved1;
	uint8_t parent_name[512]; /* UTF-16BE */
	struct vhd_locator_disk locators[VHD_MAX_LOCATORS];
	uint8_t reserved2[256];
} __attribute__((packed));
_Static_assert(sizeof(struct vhd_header_disk) == VHD_HEADER_SIZE,
	       "VHD dynamic header is 1024 bytes");

/* The same in host order. */
struct vhd_footer {
	uint32_t features;
	uint32_t version;
	uint64_t data_offset;
	uint32_t timestamp;
	char creator_app[4];
	uint32_t creator_version;
	uint32_t creator_host_os;
	uint64_t original_size;
	uint64_t current_size;
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors_per_track;
	uint32_t disk_type;
	uint32_t checksum; /* as stored */
	uint8_t uuid[16];
	uint8_t saved_state;
};

struct vhd_locator {
	uint32_t platform_code;
	uint32_t data_space;
	uint32_t data_length;
	uint64_t data_offset;
};

struct vhd_header {
	uint64_t data_offset;
	uint64_t table_offset;
	uint32_t header_version;
	uint32_t max_table_entries;
	uint32_t block_size;
	uint32_t checksum; /* as stored */
	uint8_t parent_uuid[16];
	uint32_t parent_timestamp;
	uint8_t parent_name[512]; /* kept UTF-16BE */
	struct vhd_locator locators[VHD_MAX_LOCATORS];
};

struct vhd_geometry {
	uint16_t cylinders;
	uint8_t heads;
	uint8_t sectors_per_track;
};

/* One's complement of the byte sum of len bytes, skipping the 4-byte
 * checksum field at skip. */
uint32_t vhd_checksum(const void *buf, size_t len, size_t skip);

/* Decode: false when the cookie is wrong.  *checksum_ok tells whether the
 * stored checksum matches. */
bool vhd_footer_decode(const void *raw, struct vhd_footer *f,
		       bool *checksum_ok);
/* Encode with a fresh checksum (also stored into f->checksum). */
void vhd_footer_encode(struct vhd_footer *f, void *raw);
bool vhd_header_decode(const void *raw, struct vhd_header *h,
		       bool *checksum_ok);
void vhd_header_encode(struct vhd_header *h, void *raw);

/* The spec's "CHS Calculation" appendix: geometry for a sector count
 * (clamped to the largest geometry). */
struct vhd_geometry vhd_geometry_for(uint64_t sectors);
uint64_t vhd_geometry_sectors(struct vhd_geometry g);
/* Smallest CHS-representable sector count >= sectors (force_size=off);
 * beyond the largest geometry the count is returned unchanged. */
uint64_t vhd_geometry_round_up(uint64_t sectors);

/* Bitmap sector order: bit 7 of byte 0 is the block's first sector. */
static inline bool vhd_bitmap_test(const uint8_t *bitmap, uint32_t sector)
{
	return bitmap[sector >> 3] & (0x80u >> (sector & 7));
}
void vhd_bitmap_set(uint8_t *bitmap, uint32_t first, uint32_t count);
/* Sectors from first (at most max) that share first's bit; *set gets it. */
uint32_t vhd_bitmap_run(const uint8_t *bitmap, uint32_t first, uint32_t max,
			bool *set);
/* Are all of [first, first + count) set? */
bool vhd_bitmap_all_set(const uint8_t *bitmap, uint32_t first, uint32_t count);

/* UTF-8 <-> UTF-16 (with surrogate pairs).  to_utf16 returns the byte
 * length written (no terminator), -EINVAL on bad UTF-8 or -ENAMETOOLONG.
 * to_utf8 stops at a NUL unit and always terminates; -EINVAL on bad
 * UTF-16 or -ENAMETOOLONG. */
int vhd_utf8_to_utf16(const char *in, uint8_t *out, size_t out_max,
		      bool big_endian);
int vhd_utf16_to_utf8(const uint8_t *in, size_t in_len, bool big_endian,
		      char *out, size_t out_max);

/* A locator path as stored -> a host path.  Windows paths get '/' for '\',
 * lose a "\\?\" prefix and a leading ".\".  Drive-letter paths ("C:\x")
 * cannot be used on this host: returns false (out gets the basename).
 * MacX "file://" URLs are percent-decoded. */
bool vhd_windows_path_to_host(const char *in, char *out, size_t out_max);
int vhd_url_to_path(const char *url, char *out, size_t out_max);
/* Percent-encode an absolute path as a "file://" URL. */
int vhd_path_to_url(const char *path, char *out, size_t out_max);
/* Host path -> Windows form ('\' separators). */
void vhd_host_path_to_windows(const char *in, char *out, size_t out_max);

/* Seconds since 2000-01-01 UTC for a Unix time (0 before 2000). */
uint32_t vhd_timestamp_from_unix(int64_t unix_seconds);

#endif
