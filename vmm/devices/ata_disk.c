/* SPDX-License-Identifier: MIT */
/*
 * imgvm: the SATA disk behind AHCI port 0, backed by a libimg image.
 * Command set and IDENTIFY DEVICE layout from ATA8-ACS (T13/1699-D); NCQ
 * and the NCQ error log from SATA 2.6.  Guest memory (the PRDT as an
 * iovec) goes straight to img_preadv/img_pwritev.
 */
#include "vmm/devices/ata.h"

#include "img.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ATA command codes used here */
enum {
	ATA_CMD_NOP = 0x00,
	ATA_CMD_DATA_SET_MANAGEMENT = 0x06,
	ATA_CMD_DEVICE_RESET = 0x08,
	ATA_CMD_RECALIBRATE = 0x10,
	ATA_CMD_READ_SECTORS = 0x20,
	ATA_CMD_READ_SECTORS_EXT = 0x24,
	ATA_CMD_READ_DMA_EXT = 0x25,
	ATA_CMD_READ_NATIVE_MAX_EXT = 0x27,
	ATA_CMD_READ_MULTIPLE_EXT = 0x29,
	ATA_CMD_READ_LOG_EXT = 0x2F,
	ATA_CMD_WRITE_SECTORS = 0x30,
	ATA_CMD_WRITE_SECTORS_EXT = 0x34,
	ATA_CMD_WRITE_DMA_EXT = 0x35,
	ATA_CMD_WRITE_MULTIPLE_EXT = 0x39,
	ATA_CMD_WRITE_DMA_FUA_EXT = 0x3D,
	ATA_CMD_READ_VERIFY = 0x40,
	ATA_CMD_READ_VERIFY_EXT = 0x42,
	ATA_CMD_READ_LOG_DMA_EXT = 0x47,
	ATA_CMD_READ_FPDMA_QUEUED = 0x60,
	ATA_CMD_WRITE_FPDMA_QUEUED = 0x61,
	ATA_CMD_SEEK = 0x70,
	ATA_CMD_EXECUTE_DEVICE_DIAGNOSTIC = 0x90,
	ATA_CMD_INITIALIZE_DEVICE_PARAMETERS = 0x91,
	ATA_CMD_PACKET = 0xA0,
	ATA_CMD_IDENTIFY_PACKET_DEVICE = 0xA1,
	ATA_CMD_SMART = 0xB0,
	ATA_CMD_READ_MULTIPLE = 0xC4,
	ATA_CMD_WRITE_MULTIPLE = 0xC5,
	ATA_CMD_SET_MULTIPLE_MODE = 0xC6,
	ATA_CMD_READ_DMA = 0xC8,
	ATA_CMD_WRITE_DMA = 0xCA,
	ATA_CMD_STANDBY_IMMEDIATE = 0xE0,
	ATA_CMD_IDLE_IMMEDIATE = 0xE1,
	ATA_CMD_STANDBY = 0xE2,
	ATA_CMD_IDLE = 0xE3,
	ATA_CMD_CHECK_POWER_MODE = 0xE5,
	ATA_CMD_SLEEP = 0xE6,
	ATA_CMD_FLUSH_CACHE = 0xE7,
	ATA_CMD_FLUSH_CACHE_EXT = 0xEA,
	ATA_CMD_IDENTIFY_DEVICE = 0xEC,
	ATA_CMD_SET_FEATURES = 0xEF,
	ATA_CMD_SECURITY_FREEZE_LOCK = 0xF5,
	ATA_CMD_READ_NATIVE_MAX = 0xF8,
};

/* SET FEATURES subcommands */
enum {
	ATA_FEATURE_ENABLE_WRITE_CACHE = 0x02,
	ATA_FEATURE_SET_TRANSFER_MODE = 0x03,
	ATA_FEATURE_ENABLE_SATA = 0x10,
	ATA_FEATURE_DISABLE_READ_LOOKAHEAD = 0x55,
	ATA_FEATURE_DISABLE_REVERT = 0x66,
	ATA_FEATURE_DISABLE_WRITE_CACHE = 0x82,
	ATA_FEATURE_DISABLE_SATA = 0x90,
	ATA_FEATURE_ENABLE_READ_LOOKAHEAD = 0xAA,
	ATA_FEATURE_ENABLE_REVERT = 0xCC,
};

#define ATA_LBA28_MAX 0x0FFFFFFFull
#define ATA_MAX_MULTIPLE 16
/* DATA SET MANAGEMENT: 512-byte blocks of 64 range entries we accept. */
#define ATA_TRIM_MAX_BLOCKS 8
#define ATA_NCQ_DEPTH 32

struct ata_disk {
	struct img *img;
	bool read_only;
	uint64_t sectors;
	bool write_cache;
	bool read_lookahead;
	unsigned multiple_count;
	/* NCQ error log (page 10h) */
	bool ncq_failed;
	unsigned ncq_failed_tag;
	char serial[21];
	/* bytes the guest read and wrote (atomic: ports run concurrently) */
	uint64_t bytes_read, bytes_written;
};

/* ---- shared helpers ----------------------------------------------------*/

size_t ata_buffer_write(struct ata_command *cmd, const void *src, size_t len)
{
	const uint8_t *p = src;
	size_t done = 0;

	for (int i = 0; i < cmd->iovcnt && done < len; i++) {
		size_t n = cmd->iov[i].iov_len;

		if (n > len - done)
			n = len - done;
		memcpy(cmd->iov[i].iov_base, p + done, n);
		done += n;
	}
	return done;
}

size_t ata_buffer_read(const struct ata_command *cmd, void *dst, size_t len)
{
	uint8_t *p = dst;
	size_t done = 0;

	for (int i = 0; i < cmd->iovcnt && done < len; i++) {
		size_t n = cmd->iov[i].iov_len;

		if (n > len - done)
			n = len - done;
		memcpy(p + done, cmd->iov[i].iov_base, n);
		done += n;
	}
	return done;
}

void ata_identify_string(uint16_t *words, unsigned nwords, const char *text)
{
	size_t len = strlen(text);

	for (unsigned i = 0; i < nwords; i++) {
		uint8_t hi = 2 * i < len ? (uint8_t)text[2 * i] : ' ';
		uint8_t lo = 2 * i + 1 < len ? (uint8_t)text[2 * i + 1] : ' ';

		words[i] = (uint16_t)(hi << 8 | lo);
	}
}

void ata_identify_checksum(uint16_t *identify)
{
	uint8_t sum = 0;

	identify[255] = 0x00A5;
	for (unsigned i = 0; i < 255; i++)
		sum += (uint8_t)(identify[i] & 0xFF) +
		       (uint8_t)(identify[i] >> 8);
	sum += 0xA5;
	identify[255] = (uint16_t)((uint8_t)-sum << 8 | 0xA5);
}

void ata_command_ok(struct ata_command *cmd)
{
	cmd->status = ATA_STATUS_DRDY | ATA_STATUS_DSC;
	cmd->error = 0;
}

void ata_command_abort(struct ata_command *cmd, uint8_t error)
{
	cmd->status = ATA_STATUS_DRDY | ATA_STATUS_ERR;
	cmd->error = error ? error : ATA_ERROR_ABRT;
}

bool ata_command_is_ncq(uint8_t command)
{
	return command == ATA_CMD_READ_FPDMA_QUEUED ||
	       command == ATA_CMD_WRITE_FPDMA_QUEUED;
}

/* ---- the disk ----------------------------------------------------------*/

struct ata_disk *ata_disk_create(struct img *img, bool read_only, unsigned port)
{
	struct ata_disk *disk = calloc(1, sizeof(*disk));
	const char *name;
	uint32_t hash = 2166136261u;

	if (!disk)
		return NULL;
	disk->img = img;
	disk->read_only = read_only || !img_is_writable(img);
	disk->sectors = img_size(img) / IMG_SECTOR_SIZE;
	/* A stable serial number: the same image gets the same serial. */
	name = img_filename(img);
	for (; name && *name; name++)
		hash = (hash ^ (uint8_t)*name) * 16777619u;
	snprintf(disk->serial, sizeof(disk->serial), "IMGVM%u-%08X", port,
		 hash);
	ata_disk_reset(disk);
	return disk;
}

void ata_disk_destroy(struct ata_disk *disk)
{
	if (!disk)
		return;
	if (!disk->read_only)
		img_flush(disk->img);
	free(disk);
}

void ata_disk_reset(struct ata_disk *disk)
{
	disk->write_cache = true;
	disk->read_lookahead = true;
	disk->multiple_count = ATA_MAX_MULTIPLE;
	disk->ncq_failed = false;
}

void ata_disk_set_ncq_error(struct ata_disk *disk, unsigned tag, bool failed)
{
	disk->ncq_failed = failed;
	disk->ncq_failed_tag = tag;
}

static void ata_disk_identify(struct ata_disk *disk, uint16_t *id)
{
	uint64_t lba28 = disk->sectors < ATA_LBA28_MAX ? disk->sectors
						       : ATA_LBA28_MAX;
	uint64_t cyls = disk->sectors / (16 * 63);

	memset(id, 0, 512);
	if (cyls > 16383)
		cyls = 16383;
	if (cyls == 0)
		cyls = 1;
	id[0] = 0x0040; /* fixed device */
	id[1] = (uint16_t)cyls;
	id[3] = 16;
	id[6] = 63;
	ata_identify_string(&id[10], 10, disk->serial);
	ata_identify_string(&id[23], 4, "0.1.0");
	ata_identify_string(&id[27], 20, "IMGVM HARDDISK");
	id[47] = 0x8000 | ATA_MAX_MULTIPLE;
	id[49] = 0x0B00; /* IORDY, LBA, DMA */
	id[50] = 0x4000;
	id[53] = 0x0006; /* words 64-70 and 88 valid */
	id[54] = (uint16_t)cyls;
	id[55] = 16;
	id[56] = 63;
	id[57] = (uint16_t)((cyls * 16 * 63) & 0xFFFF);
	id[58] = (uint16_t)((cyls * 16 * 63) >> 16);
	id[59] = (uint16_t)(0x0100 | disk->multiple_count);
	id[60] = (uint16_t)(lba28 & 0xFFFF);
	id[61] = (uint16_t)(lba28 >> 16);
	id[63] = 0x0407; /* MWDMA 0-2, mode 2 selected */
	id[64] = 0x0003; /* PIO 3-4 */
	id[65] = id[66] = id[67] = id[68] = 120;
	id[75] = ATA_NCQ_DEPTH - 1;
	id[76] = 0x0106; /* NCQ, SATA Gen2 and Gen1 */
	id[80] = 0x01F0; /* ATA/ATAPI-4 to ATA8-ACS */
	id[82] = 0x4060; /* NOP, read look-ahead, write cache */
	id[83] = 0x7400; /* FLUSH CACHE EXT, FLUSH CACHE, 48-bit */
	id[84] = 0x4040; /* WRITE DMA FUA EXT */
	id[85] = (uint16_t)(0x4000 | (disk->read_lookahead ? 0x40 : 0) |
			    (disk->write_cache ? 0x20 : 0));
	id[86] = 0x3400;
	id[87] = 0x4040;
	id[88] = 0x207F; /* UDMA 0-6, mode 5 selected */
	id[93] = 0;
	id[100] = (uint16_t)(disk->sectors & 0xFFFF);
	id[101] = (uint16_t)(disk->sectors >> 16);
	id[102] = (uint16_t)(disk->sectors >> 32);
	id[103] = (uint16_t)(disk->sectors >> 48);
	id[105] = ATA_TRIM_MAX_BLOCKS;
	id[106] = 0x4000; /* one logical sector per physical sector */
	id[169] = 0x0001; /* DATA SET MANAGEMENT: TRIM */
	id[217] = 0x0001; /* non-rotating medium */
	ata_identify_checksum(id);
}

/* LBA, sector count and direction of a read/write command; false when
 * the command is not a read or write. */
static bool ata_disk_decode_rw(const struct ata_command *cmd, uint64_t *lba,
			       uint32_t *sectors, bool *write, bool *fua,
			       enum ata_protocol *protocol)
{
	bool ext = false;

	*write = false;
	*fua = false;
	*protocol = ATA_PROTOCOL_DMA;
	switch (cmd->command) {
	case ATA_CMD_READ_SECTORS:
	case ATA_CMD_READ_MULTIPLE:
		*protocol = ATA_PROTOCOL_PIO_IN;
		break;
	case ATA_CMD_READ_DMA:
		break;
	case ATA_CMD_READ_SECTORS_EXT:
	case ATA_CMD_READ_MULTIPLE_EXT:
		*protocol = ATA_PROTOCOL_PIO_IN;
		ext = true;
		break;
	case ATA_CMD_READ_DMA_EXT:
		ext = true;
		break;
	case ATA_CMD_WRITE_SECTORS:
	case ATA_CMD_WRITE_MULTIPLE:
		*protocol = ATA_PROTOCOL_PIO_OUT;
		*write = true;
		break;
	case ATA_CMD_WRITE_DMA:
		*write = true;
		break;
	case ATA_CMD_WRITE_SECTORS_EXT:
	case ATA_CMD_WRITE_MULTIPLE_EXT:
		*protocol = ATA_PROTOCOL_PIO_OUT;
		*write = true;
		ext = true;
		break;
	case ATA_CMD_WRITE_DMA_EXT:
		*write = true;
		ext = true;
		break;
	case ATA_CMD_WRITE_DMA_FUA_EXT:
		*write = true;
		*fua = true;
		ext = true;
		break;
	case ATA_CMD_READ_FPDMA_QUEUED:
	case ATA_CMD_WRITE_FPDMA_QUEUED:
		/* count in the features field; FUA in device bit 7 */
		*write = cmd->command == ATA_CMD_WRITE_FPDMA_QUEUED;
		*fua = *write && (cmd->device & 0x80);
		*lba = cmd->lba;
		*sectors = cmd->features ? cmd->features : 65536;
		return true;
	default:
		return false;
	}
	if (ext) {
		*lba = cmd->lba;
		*sectors = cmd->count ? cmd->count : 65536;
	} else {
		*lba = (cmd->lba & 0xFFFFFF) | (uint64_t)(cmd->device & 0x0F)
						       << 24;
		*sectors = (cmd->count & 0xFF) ? (cmd->count & 0xFF) : 256;
	}
	return true;
}

static bool ata_disk_range_ok(const struct ata_disk *disk, uint64_t lba,
			      uint64_t sectors)
{
	return lba <= disk->sectors && sectors <= disk->sectors - lba;
}

static void ata_disk_read_write(struct ata_disk *disk, struct ata_command *cmd)
{
	struct img_iov_view buf;
	uint64_t lba = 0;
	uint32_t sectors = 0;
	bool write, fua;
	enum ata_protocol protocol;
	size_t bytes;
	int ret;

	ata_disk_decode_rw(cmd, &lba, &sectors, &write, &fua, &protocol);
	cmd->protocol = protocol;
	if (!ata_disk_range_ok(disk, lba, sectors)) {
		ata_command_abort(cmd, ATA_ERROR_IDNF | ATA_ERROR_ABRT);
		return;
	}
	if (write && disk->read_only) {
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	bytes = (size_t)sectors * IMG_SECTOR_SIZE;
	if (cmd->buffer_bytes < bytes) {
		/* PRDT shorter than the transfer: the data cannot be moved. */
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	/* the PRDT's first bytes: libimg takes an iovec of any length */
	ret = img_iov_view(&buf, cmd->iov, cmd->iovcnt, 0, bytes);
	if (ret == 0) {
		ret = write ? img_pwritev(disk->img, buf.iov, buf.cnt,
					  lba * IMG_SECTOR_SIZE)
			    : img_preadv(disk->img, buf.iov, buf.cnt,
					 lba * IMG_SECTOR_SIZE);
		img_iov_view_release(&buf);
	}
	if (ret >= 0 && write && (fua || !disk->write_cache))
		ret = img_flush(disk->img);
	if (ret < 0) {
		cmd->transferred = 0;
		ata_command_abort(cmd, write ? ATA_ERROR_ABRT : ATA_ERROR_UNC);
		return;
	}
	cmd->transferred = bytes;
	__atomic_add_fetch(write ? &disk->bytes_written : &disk->bytes_read,
			   bytes, __ATOMIC_RELAXED);
	ata_command_ok(cmd);
}

void ata_disk_counters(struct ata_disk *disk, uint64_t *read, uint64_t *written)
{
	*read = __atomic_load_n(&disk->bytes_read, __ATOMIC_RELAXED);
	*written = __atomic_load_n(&disk->bytes_written, __ATOMIC_RELAXED);
}

/* DATA SET MANAGEMENT with TRIM: the buffer holds 8-byte entries of a
 * 48-bit LBA and a 16-bit sector count (0: unused entry). */
static void ata_disk_trim(struct ata_disk *disk, struct ata_command *cmd)
{
	uint64_t entries[ATA_TRIM_MAX_BLOCKS * 64];
	unsigned blocks = cmd->count ? cmd->count : 65536;
	size_t len;

	cmd->protocol = ATA_PROTOCOL_DMA;
	if (!(cmd->features & 0x01) || blocks > ATA_TRIM_MAX_BLOCKS ||
	    disk->read_only) {
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	len = (size_t)blocks * 512;
	if (ata_buffer_read(cmd, entries, len) != len) {
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	cmd->transferred = len;
	/* validate all ranges first: a bad one aborts the whole command */
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t e = le64toh(entries[i]);
		uint64_t lba = e & 0xFFFFFFFFFFFFull;
		uint64_t n = e >> 48;

		if (n && !ata_disk_range_ok(disk, lba, n)) {
			ata_command_abort(cmd, ATA_ERROR_IDNF | ATA_ERROR_ABRT);
			return;
		}
	}
	for (size_t i = 0; i < len / 8; i++) {
		uint64_t e = le64toh(entries[i]);
		uint64_t lba = e & 0xFFFFFFFFFFFFull;
		uint64_t n = e >> 48;
		int ret;

		if (!n)
			continue;
		ret = img_discard(disk->img, lba * IMG_SECTOR_SIZE,
				  n * IMG_SECTOR_SIZE);
		/* TRIM is advisory: a format that cannot deallocate keeps
		 * the data, which is allowed. */
		if (ret < 0 && ret != -ENOTSUP && ret != -EOPNOTSUPP) {
			ata_command_abort(cmd, ATA_ERROR_ABRT);
			return;
		}
	}
	ata_command_ok(cmd);
}

/* READ LOG EXT: page 10h (NCQ command error) only. */
static void ata_disk_read_log(struct ata_disk *disk, struct ata_command *cmd)
{
	uint8_t page[512];
	uint8_t log = cmd->lba & 0xFF;
	unsigned count = cmd->count;

	cmd->protocol = cmd->command == ATA_CMD_READ_LOG_DMA_EXT
				? ATA_PROTOCOL_DMA
				: ATA_PROTOCOL_PIO_IN;
	memset(page, 0, sizeof(page));
	if (count != 1 || ((cmd->lba >> 8) & 0xFFFF) != 0) {
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	if (log == 0x00) {
		/* log directory: version 1, one page of log 10h */
		page[0] = 0x01;
		page[0x10 * 2] = 0x01;
	} else if (log == 0x10) {
		if (disk->ncq_failed)
			page[0] = (uint8_t)(disk->ncq_failed_tag & 0x1F);
		else
			page[0] = 0x80; /* NQ: no queued command failed */
		page[2] = ATA_STATUS_DRDY | ATA_STATUS_ERR;
		page[3] = ATA_ERROR_ABRT;
		disk->ncq_failed = false;
	} else {
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	if (log == 0x10) {
		uint8_t sum = 0;

		for (int i = 0; i < 511; i++)
			sum += page[i];
		page[511] = (uint8_t)-sum;
	}
	cmd->transferred = ata_buffer_write(cmd, page, sizeof(page));
	ata_command_ok(cmd);
}

static void ata_disk_set_features(struct ata_disk *disk,
				  struct ata_command *cmd)
{
	switch (cmd->features & 0xFF) {
	case ATA_FEATURE_ENABLE_WRITE_CACHE:
		disk->write_cache = true;
		break;
	case ATA_FEATURE_DISABLE_WRITE_CACHE:
		/* data written so far must be stable from now on */
		if (!disk->read_only && img_flush(disk->img) < 0) {
			ata_command_abort(cmd, ATA_ERROR_ABRT);
			return;
		}
		disk->write_cache = false;
		break;
	case ATA_FEATURE_ENABLE_READ_LOOKAHEAD:
		disk->read_lookahead = true;
		break;
	case ATA_FEATURE_DISABLE_READ_LOOKAHEAD:
		disk->read_lookahead = false;
		break;
	case ATA_FEATURE_SET_TRANSFER_MODE: {
		unsigned mode = cmd->count & 0xFF;

		/* PIO default/flow control, MWDMA 0-2, UDMA 0-6 */
		if (mode > 0x0C && !(mode >= 0x20 && mode <= 0x22) &&
		    !(mode >= 0x40 && mode <= 0x46)) {
			ata_command_abort(cmd, ATA_ERROR_ABRT);
			return;
		}
		break;
	}
	case ATA_FEATURE_DISABLE_REVERT:
	case ATA_FEATURE_ENABLE_REVERT:
		break;
	case ATA_FEATURE_ENABLE_SATA:
	case ATA_FEATURE_DISABLE_SATA:
		/* no optional SATA features are advertised in word 78 */
	default:
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		return;
	}
	ata_command_ok(cmd);
}

void ata_disk_execute(struct ata_disk *disk, struct ata_command *cmd)
{
	uint16_t identify[256];
	uint64_t lba;
	uint32_t sectors;
	bool write, fua;
	enum ata_protocol protocol;

	cmd->protocol = ATA_PROTOCOL_NON_DATA;
	cmd->transferred = 0;
	cmd->out_count = cmd->count;
	cmd->out_lba = cmd->lba;
	cmd->out_device = cmd->device;

	if (ata_disk_decode_rw(cmd, &lba, &sectors, &write, &fua, &protocol)) {
		ata_disk_read_write(disk, cmd);
		return;
	}
	switch (cmd->command) {
	case ATA_CMD_IDENTIFY_DEVICE:
		ata_disk_identify(disk, identify);
		cmd->protocol = ATA_PROTOCOL_PIO_IN;
		cmd->transferred =
			ata_buffer_write(cmd, identify, sizeof(identify));
		ata_command_ok(cmd);
		break;
	case ATA_CMD_FLUSH_CACHE:
	case ATA_CMD_FLUSH_CACHE_EXT:
		if (!disk->read_only && img_flush(disk->img) < 0)
			ata_command_abort(cmd, ATA_ERROR_ABRT);
		else
			ata_command_ok(cmd);
		break;
	case ATA_CMD_DATA_SET_MANAGEMENT:
		ata_disk_trim(disk, cmd);
		break;
	case ATA_CMD_SET_FEATURES:
		ata_disk_set_features(disk, cmd);
		break;
	case ATA_CMD_READ_VERIFY:
		lba = (cmd->lba & 0xFFFFFF) | (uint64_t)(cmd->device & 0x0F)
						      << 24;
		sectors = (cmd->count & 0xFF) ? (cmd->count & 0xFF) : 256;
		if (ata_disk_range_ok(disk, lba, sectors))
			ata_command_ok(cmd);
		else
			ata_command_abort(cmd, ATA_ERROR_IDNF | ATA_ERROR_ABRT);
		break;
	case ATA_CMD_READ_VERIFY_EXT:
		sectors = cmd->count ? cmd->count : 65536;
		if (ata_disk_range_ok(disk, cmd->lba, sectors))
			ata_command_ok(cmd);
		else
			ata_command_abort(cmd, ATA_ERROR_IDNF | ATA_ERROR_ABRT);
		break;
	case ATA_CMD_SET_MULTIPLE_MODE: {
		unsigned n = cmd->count & 0xFF;

		if (n == 0 || n > ATA_MAX_MULTIPLE || (n & (n - 1))) {
			ata_command_abort(cmd, ATA_ERROR_ABRT);
		} else {
			disk->multiple_count = n;
			ata_command_ok(cmd);
		}
		break;
	}
	case ATA_CMD_READ_NATIVE_MAX:
		lba = disk->sectors ? disk->sectors - 1 : 0;
		if (lba > ATA_LBA28_MAX - 1)
			lba = ATA_LBA28_MAX - 1;
		cmd->out_lba = lba & 0xFFFFFF;
		cmd->out_device = (uint8_t)((cmd->device & 0xF0) | (lba >> 24));
		ata_command_ok(cmd);
		break;
	case ATA_CMD_READ_NATIVE_MAX_EXT:
		cmd->out_lba = disk->sectors ? disk->sectors - 1 : 0;
		ata_command_ok(cmd);
		break;
	case ATA_CMD_READ_LOG_EXT:
	case ATA_CMD_READ_LOG_DMA_EXT:
		ata_disk_read_log(disk, cmd);
		break;
	case ATA_CMD_CHECK_POWER_MODE:
		cmd->out_count = 0xFF; /* active or idle */
		ata_command_ok(cmd);
		break;
	case ATA_CMD_EXECUTE_DEVICE_DIAGNOSTIC:
		cmd->out_count = 1;
		cmd->out_lba = 0;
		cmd->out_device = 0;
		cmd->status = ATA_STATUS_DRDY | ATA_STATUS_DSC;
		cmd->error = 0x01; /* device 0 passed */
		break;
	case ATA_CMD_STANDBY_IMMEDIATE:
	case ATA_CMD_IDLE_IMMEDIATE:
	case ATA_CMD_STANDBY:
	case ATA_CMD_IDLE:
	case ATA_CMD_SLEEP:
	case ATA_CMD_RECALIBRATE:
	case ATA_CMD_SEEK:
	case ATA_CMD_INITIALIZE_DEVICE_PARAMETERS:
	case ATA_CMD_SECURITY_FREEZE_LOCK:
		ata_command_ok(cmd);
		break;
	case ATA_CMD_IDENTIFY_PACKET_DEVICE:
	case ATA_CMD_PACKET:
	case ATA_CMD_DEVICE_RESET:
	case ATA_CMD_SMART:
	case ATA_CMD_NOP:
	default:
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		break;
	}
}
