/* SPDX-License-Identifier: MIT */
/*
 * imgvm: the SATAPI CD-ROM behind AHCI port 1, backed by an ISO file
 * (read-only, 2048-byte blocks).  ATA side: IDENTIFY PACKET DEVICE and
 * PACKET (ATA8-ACS); the packets: MMC-5 with SPC-3 sense data.
 *
 * Medium state: an ISO is in the closed tray at power-on.  An eject (the
 * guest's START STOP UNIT with LoEj, or atapi_eject()) opens the tray and
 * takes the disc away for good; the guest then sees a unit attention
 * (medium may have changed) and NOT READY / MEDIUM NOT PRESENT after it.
 */
#include "vmm/devices/ata.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ATAPI_BLOCK 2048u
/* A disc larger than a CD (about 700 MB) is reported as a DVD-ROM. */
#define ATAPI_CD_MAX_BLOCKS 360000u
#define ATAPI_STATUS_GOOD (ATA_STATUS_DRDY | ATA_STATUS_DSC)

/* MMC / SPC operation codes */
enum {
	MMC_TEST_UNIT_READY = 0x00,
	MMC_REQUEST_SENSE = 0x03,
	MMC_INQUIRY = 0x12,
	MMC_START_STOP_UNIT = 0x1B,
	MMC_PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E,
	MMC_READ_CAPACITY = 0x25,
	MMC_READ_10 = 0x28,
	MMC_SEEK_10 = 0x2B,
	MMC_READ_TOC_PMA_ATIP = 0x43,
	MMC_GET_CONFIGURATION = 0x46,
	MMC_GET_EVENT_STATUS_NOTIFICATION = 0x4A,
	MMC_READ_DISC_INFORMATION = 0x51,
	MMC_MODE_SENSE_10 = 0x5A,
	MMC_READ_12 = 0xA8,
	MMC_SET_CD_SPEED = 0xBB,
	MMC_MECHANISM_STATUS = 0xBD,
	MMC_READ_CD = 0xBE,
};

/* Sense keys and additional sense codes (SPC-3 4.5.6, annex D) */
enum {
	SENSE_NONE = 0x0,
	SENSE_NOT_READY = 0x2,
	SENSE_ILLEGAL_REQUEST = 0x5,
	SENSE_UNIT_ATTENTION = 0x6,
};
enum {
	ASC_INVALID_OPCODE = 0x20,
	ASC_LBA_OUT_OF_RANGE = 0x21,
	ASC_INVALID_FIELD_IN_CDB = 0x24,
	ASC_MEDIUM_MAY_HAVE_CHANGED = 0x28,
	ASC_SAVING_PARAMETERS_NOT_SUPPORTED = 0x39,
	ASC_MEDIUM_NOT_PRESENT = 0x3A,
	ASC_MEDIUM_REMOVAL_PREVENTED = 0x53,
};

/* GET EVENT STATUS NOTIFICATION media event codes */
enum { MEDIA_EVENT_NONE = 0, MEDIA_EVENT_NEW = 2, MEDIA_EVENT_REMOVAL = 3 };

struct atapi {
	pthread_mutex_t lock; /* eject comes from another thread */
	int fd;		      /* -1: no disc */
	uint64_t blocks;
	bool tray_open;
	bool prevent_removal;
	bool unit_attention;
	uint8_t media_event;
	uint8_t sense_key, asc, ascq;
	char serial[21];
	char *medium; /* the ISO's file name, NULL without a disc */
};

struct atapi *atapi_create(const char *path, unsigned port, char *err,
			   size_t errlen)
{
	struct atapi *cd = calloc(1, sizeof(*cd));
	struct stat st;

	if (!cd) {
		snprintf(err, errlen, "cdrom: out of memory");
		return NULL;
	}
	cd->fd = -1;
	pthread_mutex_init(&cd->lock, NULL);
	snprintf(cd->serial, sizeof(cd->serial), "IMGVM-CD%u", port);
	if (path) {
		cd->fd = open(path, O_RDONLY | O_CLOEXEC);
		if (cd->fd < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto fail;
		}
		if (fstat(cd->fd, &st) < 0 || st.st_size < ATAPI_BLOCK) {
			snprintf(err, errlen,
				 "%s: not an ISO image (smaller than one "
				 "2048-byte block)",
				 path);
			goto fail;
		}
		cd->blocks =
			((uint64_t)st.st_size + ATAPI_BLOCK - 1) / ATAPI_BLOCK;
		cd->medium = strdup(path);
	} else {
		cd->tray_open = true;
	}
	return cd;
fail:
	atapi_destroy(cd);
	return NULL;
}

void atapi_destroy(struct atapi *cd)
{
	if (!cd)
		return;
	if (cd->fd >= 0)
		close(cd->fd);
	pthread_mutex_destroy(&cd->lock);
	free(cd->medium);
	free(cd);
}

void atapi_reset(struct atapi *cd)
{
	pthread_mutex_lock(&cd->lock);
	cd->prevent_removal = false;
	cd->sense_key = SENSE_NONE;
	cd->asc = 0;
	cd->ascq = 0;
	pthread_mutex_unlock(&cd->lock);
}

static void atapi_remove_disc(struct atapi *cd)
{
	if (cd->fd >= 0) {
		close(cd->fd);
		cd->fd = -1;
		cd->blocks = 0;
		cd->unit_attention = true;
		cd->media_event = MEDIA_EVENT_REMOVAL;
	}
	free(cd->medium);
	cd->medium = NULL;
	cd->tray_open = true;
}

void atapi_eject(struct atapi *cd)
{
	pthread_mutex_lock(&cd->lock);
	atapi_remove_disc(cd);
	cd->prevent_removal = false;
	pthread_mutex_unlock(&cd->lock);
}

int atapi_insert(struct atapi *cd, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *name = strdup(path);
	struct stat st;

	if (fd < 0 || !name) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_size < ATAPI_BLOCK) {
		snprintf(err, errlen,
			 "%s: not an ISO image (smaller than one 2048-byte "
			 "block)",
			 path);
		goto fail;
	}
	pthread_mutex_lock(&cd->lock);
	/* a disc still in the drive leaves first, as a person would do it */
	atapi_remove_disc(cd);
	cd->fd = fd;
	cd->blocks = ((uint64_t)st.st_size + ATAPI_BLOCK - 1) / ATAPI_BLOCK;
	cd->medium = name;
	cd->tray_open = false;
	/* MMC-5 6.8: a new medium is reported once by GET EVENT STATUS
	 * NOTIFICATION (NewMedia) and once as a unit attention (MEDIUM MAY
	 * HAVE CHANGED) to the next command */
	cd->unit_attention = true;
	cd->media_event = MEDIA_EVENT_NEW;
	pthread_mutex_unlock(&cd->lock);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(name);
	return -EINVAL;
}

char *atapi_medium(struct atapi *cd)
{
	char *name;

	pthread_mutex_lock(&cd->lock);
	name = cd->medium ? strdup(cd->medium) : NULL;
	pthread_mutex_unlock(&cd->lock);
	return name;
}

/* ---- packet helpers ----------------------------------------------------*/

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Block address as 0, M, S, F (MMC-5 6.26.3.1: MSF = LBA + 150 frames) */
static void put_msf(uint8_t *p, uint64_t lba)
{
	uint64_t frames = lba + 150;
	uint64_t minutes = frames / (75 * 60);

	p[0] = 0;
	p[1] = (uint8_t)(minutes > 255 ? 255 : minutes);
	p[2] = (uint8_t)((frames / 75) % 60);
	p[3] = (uint8_t)(frames % 75);
}

static void put_address(uint8_t *p, uint64_t lba, bool msf)
{
	if (msf)
		put_msf(p, lba);
	else
		put_be32(p, (uint32_t)lba);
}

static void atapi_check_condition(struct atapi *cd, struct ata_command *cmd,
				  uint8_t key, uint8_t asc, uint8_t ascq)
{
	cd->sense_key = key;
	cd->asc = asc;
	cd->ascq = ascq;
	cmd->status = ATA_STATUS_DRDY | ATA_STATUS_ERR;
	cmd->error = (uint8_t)(key << 4);
	if (key == SENSE_ILLEGAL_REQUEST)
		cmd->error |= ATA_ERROR_ABRT;
}

static void atapi_good(struct atapi *cd, struct ata_command *cmd)
{
	cd->sense_key = SENSE_NONE;
	cd->asc = 0;
	cd->ascq = 0;
	cmd->status = ATAPI_STATUS_GOOD;
	cmd->error = 0;
}

static void atapi_invalid_field(struct atapi *cd, struct ata_command *cmd)
{
	atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
			      ASC_INVALID_FIELD_IN_CDB, 0);
}

/* Returns data to the host: at most alloc bytes of len. */
static void atapi_reply(struct atapi *cd, struct ata_command *cmd,
			const void *data, size_t len, size_t alloc)
{
	if (len > alloc)
		len = alloc;
	cmd->transferred = ata_buffer_write(cmd, data, len);
	atapi_good(cd, cmd);
}

static bool atapi_medium_ready(struct atapi *cd, struct ata_command *cmd)
{
	if (cd->fd >= 0)
		return true;
	atapi_check_condition(cd, cmd, SENSE_NOT_READY, ASC_MEDIUM_NOT_PRESENT,
			      cd->tray_open ? 0x02 : 0x01);
	return false;
}

static bool atapi_is_dvd(const struct atapi *cd)
{
	return cd->blocks > ATAPI_CD_MAX_BLOCKS;
}

/* ---- data reads --------------------------------------------------------*/

/* Zero the buffer from byte done to byte end (the end of the file falls
 * inside the last block). */
static void atapi_zero_buffer(struct ata_command *cmd, uint64_t done,
			      uint64_t end)
{
	uint64_t pos = 0;

	for (int i = 0; i < cmd->iovcnt && pos < end; i++) {
		uint64_t a = pos, b = pos + cmd->iov[i].iov_len;

		pos = b;
		if (b <= done)
			continue;
		if (a < done)
			a = done;
		if (b > end)
			b = end;
		memset((uint8_t *)cmd->iov[i].iov_base +
			       (a - (pos - cmd->iov[i].iov_len)),
		       0, b - a);
	}
}

/* Reads count blocks at lba from the ISO straight into the buffer. */
static void atapi_read_blocks(struct atapi *cd, struct ata_command *cmd,
			      uint64_t lba, uint64_t count)
{
	struct iovec iov[1024];
	uint64_t bytes, off, done = 0;

	if (!atapi_medium_ready(cd, cmd))
		return;
	if (lba > cd->blocks || count > cd->blocks - lba) {
		atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
				      ASC_LBA_OUT_OF_RANGE, 0);
		return;
	}
	bytes = count * ATAPI_BLOCK;
	if (cmd->buffer_bytes < bytes) {
		atapi_invalid_field(cd, cmd);
		return;
	}
	off = lba * ATAPI_BLOCK;
	while (done < bytes) {
		uint64_t pos = 0;
		int n = 0;
		ssize_t got;

		/* up to 1024 iovec entries covering [done, bytes) */
		for (int i = 0; i < cmd->iovcnt && n < 1024 && pos < bytes;
		     i++) {
			uint64_t a = pos, b = pos + cmd->iov[i].iov_len;

			pos = b;
			if (b <= done)
				continue;
			if (a < done)
				a = done;
			if (b > bytes)
				b = bytes;
			iov[n].iov_base = (uint8_t *)cmd->iov[i].iov_base +
					  (a - (pos - cmd->iov[i].iov_len));
			iov[n].iov_len = b - a;
			n++;
		}
		got = preadv(cd->fd, iov, n, (off_t)(off + done));
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			atapi_check_condition(cd, cmd, 0x3 /* MEDIUM ERROR */,
					      0x11 /* UNRECOVERED READ */, 0);
			cmd->transferred = done;
			return;
		}
		if (got == 0) {
			/* end of file inside the last block */
			atapi_zero_buffer(cmd, done, bytes);
			done = bytes;
			break;
		}
		done += (uint64_t)got;
	}
	cmd->transferred = done;
	atapi_good(cd, cmd);
}

/* ---- the MMC commands --------------------------------------------------*/

static void atapi_request_sense(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	uint8_t sense[18] = { 0 };

	if (cd->unit_attention) {
		cd->unit_attention = false;
		cd->sense_key = SENSE_UNIT_ATTENTION;
		cd->asc = ASC_MEDIUM_MAY_HAVE_CHANGED;
		cd->ascq = 0;
	} else if (cd->sense_key == SENSE_NONE && cd->fd < 0) {
		/* report the standing not-ready condition */
		cd->sense_key = SENSE_NOT_READY;
		cd->asc = ASC_MEDIUM_NOT_PRESENT;
		cd->ascq = cd->tray_open ? 0x02 : 0x01;
	}
	sense[0] = 0x70; /* current error, fixed format */
	sense[2] = cd->sense_key;
	sense[7] = 10; /* additional sense length */
	sense[12] = cd->asc;
	sense[13] = cd->ascq;
	/* the sense is consumed by being reported */
	atapi_reply(cd, cmd, sense, sizeof(sense), pkt[4]);
}

static void atapi_inquiry(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	uint8_t data[36] = { 0 };
	size_t alloc = be16(&pkt[3]);

	if (pkt[1] & 0x01) {
		/* vital product data: only the list of pages */
		uint8_t vpd[5] = { 0x05, 0x00, 0x00, 0x01, 0x00 };

		if (pkt[2] != 0x00) {
			atapi_invalid_field(cd, cmd);
			return;
		}
		atapi_reply(cd, cmd, vpd, sizeof(vpd), alloc);
		return;
	}
	if (pkt[2] != 0) {
		atapi_invalid_field(cd, cmd);
		return;
	}
	data[0] = 0x05; /* CD/DVD device */
	data[1] = 0x80; /* removable medium */
	data[2] = 0x05; /* SPC-3 */
	data[3] = 0x02; /* response data format */
	data[4] = sizeof(data) - 5;
	memcpy(&data[8], "IMGVM   ", 8);
	memcpy(&data[16], "DVD-ROM         ", 16);
	memcpy(&data[32], "0.1 ", 4);
	atapi_reply(cd, cmd, data, sizeof(data), alloc);
}

static void atapi_start_stop_unit(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	bool load_eject = pkt[4] & 0x02, start = pkt[4] & 0x01;

	if ((pkt[4] >> 4) != 0 || !load_eject) {
		/* a power condition or a plain spin up/down: nothing to do */
		atapi_good(cd, cmd);
		return;
	}
	if (start) {
		/* load: closes the tray; the disc taken out is gone */
		cd->tray_open = false;
		atapi_good(cd, cmd);
		return;
	}
	if (cd->prevent_removal) {
		atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
				      ASC_MEDIUM_REMOVAL_PREVENTED, 0x02);
		return;
	}
	atapi_remove_disc(cd);
	/* the host that ejected knows; no unit attention for it */
	cd->unit_attention = false;
	atapi_good(cd, cmd);
}

static void atapi_read_capacity(struct atapi *cd, struct ata_command *cmd)
{
	uint8_t data[8];
	uint64_t last;

	if (!atapi_medium_ready(cd, cmd))
		return;
	last = cd->blocks - 1;
	put_be32(&data[0], last > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)last);
	put_be32(&data[4], ATAPI_BLOCK);
	atapi_reply(cd, cmd, data, sizeof(data), sizeof(data));
}

static void atapi_read_toc(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	bool msf = pkt[1] & 0x02;
	unsigned format = pkt[2] & 0x0F, track = pkt[6];
	size_t alloc = be16(&pkt[7]), len;
	uint8_t data[64] = { 0 };

	if (!atapi_medium_ready(cd, cmd))
		return;
	if (format == 0 && (pkt[9] >> 6))
		format = pkt[9] >> 6; /* the older place of the format */
	data[2] = 1;		      /* first track / session */
	data[3] = 1;		      /* last */
	switch (format) {
	case 0: /* TOC: track 1 and the lead-out */
		len = 4;
		if (track > 1 && track != 0xAA) {
			atapi_invalid_field(cd, cmd);
			return;
		}
		if (track <= 1) {
			data[len + 1] = 0x14; /* data track, ADR 1 */
			data[len + 2] = 1;
			put_address(&data[len + 4], 0, msf);
			len += 8;
		}
		data[len + 1] = 0x14;
		data[len + 2] = 0xAA;
		put_address(&data[len + 4], cd->blocks, msf);
		len += 8;
		break;
	case 1: /* session information: one complete session */
		data[5] = 0x14;
		data[6] = 1;
		put_address(&data[8], 0, msf);
		len = 12;
		break;
	case 2: { /* full TOC: points A0, A1, A2 and track 1 */
		static const uint8_t points[] = { 0xA0, 0xA1, 0xA2, 0x01 };
		uint8_t addr[4];

		len = 4;
		for (unsigned i = 0; i < sizeof(points); i++) {
			uint8_t *d = &data[len];

			d[0] = 1;    /* session */
			d[1] = 0x14; /* ADR 1, data track */
			d[3] = points[i];
			if (points[i] == 0xA0 || points[i] == 0xA1) {
				d[8] = 1; /* first / last track; */
			} else if (points[i] == 0xA2) {
				put_msf(addr, cd->blocks);
				memcpy(&d[8], &addr[1], 3);
			} else {
				put_msf(addr, 0);
				memcpy(&d[8], &addr[1], 3);
			}
			len += 11;
		}
		break;
	}
	default:
		atapi_invalid_field(cd, cmd);
		return;
	}
	put_be16(&data[0], (uint16_t)(len - 2));
	atapi_reply(cd, cmd, data, len, alloc);
}

/* One feature descriptor of GET CONFIGURATION (MMC-5 5.3). */
static size_t atapi_put_feature(uint8_t *p, uint16_t code, bool persistent,
				bool current, const uint8_t *body,
				uint8_t body_len)
{
	put_be16(p, code);
	p[2] = (uint8_t)((persistent ? 0x02 : 0) | (current ? 0x01 : 0));
	if (code == 0x0001)
		p[2] |= 1 << 2; /* Core feature version 1 */
	p[3] = body_len;
	memcpy(p + 4, body, body_len);
	return 4u + body_len;
}

static void atapi_get_configuration(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	unsigned rt = pkt[1] & 0x03;
	uint16_t start = be16(&pkt[2]);
	size_t alloc = be16(&pkt[7]), len = 8;
	bool media = cd->fd >= 0, dvd = media && atapi_is_dvd(cd);
	uint16_t profile = media ? (dvd ? 0x0010 : 0x0008) : 0;
	uint8_t data[256] = { 0 };
	uint8_t profiles[8] = {
		0x00, 0x10, dvd, 0, 0x00, 0x08, media && !dvd, 0
	};
	uint8_t core[8] = { 0, 0, 0, 2 /* ATAPI */, 0x01 /* DBE */ };
	uint8_t morphing[4] = { 0x02 /* OCEvent */ };
	uint8_t removable[4] = { 0x29 /* tray, eject, lock */ };
	uint8_t random_readable[8] = { 0, 0, 0x08, 0x00, 0, dvd ? 16 : 1 };
	uint8_t zero[4] = { 0 };
	struct {
		uint16_t code;
		bool persistent, current;
		const uint8_t *body;
		uint8_t len;
	} features[] = {
		{ 0x0000, true, true, profiles, sizeof(profiles) },
		{ 0x0001, true, true, core, sizeof(core) },
		{ 0x0002, true, true, morphing, sizeof(morphing) },
		{ 0x0003, true, true, removable, sizeof(removable) },
		{ 0x0010, false, media, random_readable,
		  sizeof(random_readable) },
		{ 0x001E, false, media && !dvd, zero, sizeof(zero) },
		{ 0x001F, false, dvd, zero, sizeof(zero) },
		{ 0x0100, true, true, zero, 0 },
	};

	if (rt == 3) {
		atapi_invalid_field(cd, cmd);
		return;
	}
	for (unsigned i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		if (features[i].code < start)
			continue;
		if (rt == 1 && !features[i].current)
			continue;
		if (rt == 2 && features[i].code != start)
			continue;
		len += atapi_put_feature(&data[len], features[i].code,
					 features[i].persistent,
					 features[i].current, features[i].body,
					 features[i].len);
	}
	put_be32(&data[0], (uint32_t)(len - 4));
	put_be16(&data[6], profile);
	atapi_reply(cd, cmd, data, len, alloc);
}

static void atapi_get_event_status(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	size_t alloc = be16(&pkt[7]);
	uint8_t data[8] = { 0 };

	if (!(pkt[1] & 0x01)) {
		/* asynchronous notification is not supported */
		atapi_invalid_field(cd, cmd);
		return;
	}
	data[3] = 0x10; /* supported classes: media */
	if (!(pkt[4] & 0x10)) {
		put_be16(&data[0], 2);
		data[2] = 0x80; /* no event available */
		atapi_reply(cd, cmd, data, 4, alloc);
		return;
	}
	put_be16(&data[0], 6);
	data[2] = 0x04; /* media class */
	data[4] = cd->media_event;
	data[5] = (uint8_t)((cd->fd >= 0 ? 0x02 : 0) | (cd->tray_open ? 1 : 0));
	cd->media_event = MEDIA_EVENT_NONE;
	atapi_reply(cd, cmd, data, 8, alloc);
}

static void atapi_mode_sense(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	unsigned pc = pkt[2] >> 6, page = pkt[2] & 0x3F;
	size_t alloc = be16(&pkt[7]), len = 8;
	uint8_t data[64] = { 0 };

	if (pc == 3) {
		atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
				      ASC_SAVING_PARAMETERS_NOT_SUPPORTED, 0);
		return;
	}
	if (page != 0x01 && page != 0x2A && page != 0x3F) {
		atapi_invalid_field(cd, cmd);
		return;
	}
	if (page == 0x01 || page == 0x3F) {
		/* read error recovery */
		data[len + 0] = 0x01;
		data[len + 1] = 0x06;
		data[len + 3] = pc == 1 ? 0 : 5; /* read retry count */
		len += 8;
	}
	if (page == 0x2A || page == 0x3F) {
		uint8_t *p = &data[len];

		/* capabilities and mechanical status (MMC-3 5.5.10) */
		p[0] = 0x2A;
		p[1] = 0x14;
		if (pc != 1) {
			p[2] = 0x08; /* reads DVD-ROM */
			p[4] = 0x71; /* multi-session, mode 2 form 1/2, audio */
			p[5] = 0x03; /* CD-DA commands, accurate stream */
			p[6] = (uint8_t)(0x29 |
					 (cd->prevent_removal ? 0x02 : 0));
			put_be16(&p[8], 16 * 176); /* max speed, KB/s */
			put_be16(&p[12], 512);	   /* buffer, KB */
			put_be16(&p[14], 16 * 176);
		}
		len += 22;
	}
	put_be16(&data[0], (uint16_t)(len - 2));
	data[2] = cd->fd >= 0 ? 0x00 : 0x70; /* medium type: none */
	atapi_reply(cd, cmd, data, len, alloc);
}

static void atapi_read_disc_information(struct atapi *cd,
					struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	uint8_t data[34] = { 0 };

	if (pkt[1] & 0x07) {
		atapi_invalid_field(cd, cmd);
		return;
	}
	if (!atapi_medium_ready(cd, cmd))
		return;
	put_be16(&data[0], sizeof(data) - 2);
	data[2] = 0x0E;		    /* last session complete, disc complete */
	data[3] = 1;		    /* first track */
	data[4] = 1;		    /* sessions */
	data[5] = 1;		    /* first track of the last session */
	data[6] = 1;		    /* last track of the last session */
	memset(&data[16], 0xFF, 8); /* no lead-in / lead-out to add */
	atapi_reply(cd, cmd, data, sizeof(data), be16(&pkt[7]));
}

static void atapi_mechanism_status(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;
	uint8_t data[8] = { 0 };

	data[1] = cd->tray_open ? 0x10 : 0x00;
	atapi_reply(cd, cmd, data, sizeof(data), be16(&pkt[8]));
}

/* Commands that do not report a pending unit attention (MMC-5 4.1.6.1) */
static bool atapi_reports_unit_attention(uint8_t opcode)
{
	return opcode != MMC_INQUIRY && opcode != MMC_REQUEST_SENSE &&
	       opcode != MMC_GET_EVENT_STATUS_NOTIFICATION &&
	       opcode != MMC_GET_CONFIGURATION;
}

static void atapi_packet(struct atapi *cd, struct ata_command *cmd)
{
	const uint8_t *pkt = cmd->packet;

	cmd->protocol = (cmd->features & 0x01) ? ATA_PROTOCOL_DMA
					       : ATA_PROTOCOL_PIO_IN;
	cmd->out_count = 0x03; /* interrupt reason: I/O, C/D: status */
	if (cd->unit_attention && atapi_reports_unit_attention(pkt[0])) {
		cd->unit_attention = false;
		atapi_check_condition(cd, cmd, SENSE_UNIT_ATTENTION,
				      ASC_MEDIUM_MAY_HAVE_CHANGED, 0);
		return;
	}
	switch (pkt[0]) {
	case MMC_TEST_UNIT_READY:
		if (atapi_medium_ready(cd, cmd))
			atapi_good(cd, cmd);
		break;
	case MMC_REQUEST_SENSE:
		atapi_request_sense(cd, cmd);
		break;
	case MMC_INQUIRY:
		atapi_inquiry(cd, cmd);
		break;
	case MMC_START_STOP_UNIT:
		atapi_start_stop_unit(cd, cmd);
		break;
	case MMC_PREVENT_ALLOW_MEDIUM_REMOVAL:
		cd->prevent_removal = pkt[4] & 0x01;
		atapi_good(cd, cmd);
		break;
	case MMC_READ_CAPACITY:
		atapi_read_capacity(cd, cmd);
		break;
	case MMC_READ_10:
		atapi_read_blocks(cd, cmd, be32(&pkt[2]), be16(&pkt[7]));
		break;
	case MMC_READ_12:
		atapi_read_blocks(cd, cmd, be32(&pkt[2]), be32(&pkt[6]));
		break;
	case MMC_READ_CD: {
		uint64_t count = (uint64_t)pkt[6] << 16 | pkt[7] << 8 | pkt[8];
		unsigned type = (pkt[1] >> 2) & 0x07;

		/* user data of data sectors only (no headers, subchannels) */
		if ((type != 0 && type != 2) || (count && pkt[9] != 0x10) ||
		    pkt[10]) {
			atapi_invalid_field(cd, cmd);
			break;
		}
		atapi_read_blocks(cd, cmd, be32(&pkt[2]), count);
		break;
	}
	case MMC_SEEK_10:
		if (!atapi_medium_ready(cd, cmd))
			break;
		if (be32(&pkt[2]) >= cd->blocks)
			atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
					      ASC_LBA_OUT_OF_RANGE, 0);
		else
			atapi_good(cd, cmd);
		break;
	case MMC_READ_TOC_PMA_ATIP:
		atapi_read_toc(cd, cmd);
		break;
	case MMC_GET_CONFIGURATION:
		atapi_get_configuration(cd, cmd);
		break;
	case MMC_GET_EVENT_STATUS_NOTIFICATION:
		atapi_get_event_status(cd, cmd);
		break;
	case MMC_MODE_SENSE_10:
		atapi_mode_sense(cd, cmd);
		break;
	case MMC_READ_DISC_INFORMATION:
		atapi_read_disc_information(cd, cmd);
		break;
	case MMC_MECHANISM_STATUS:
		atapi_mechanism_status(cd, cmd);
		break;
	case MMC_SET_CD_SPEED:
		atapi_good(cd, cmd);
		break;
	default:
		atapi_check_condition(cd, cmd, SENSE_ILLEGAL_REQUEST,
				      ASC_INVALID_OPCODE, 0);
		break;
	}
	if (cmd->transferred == 0 && cmd->protocol == ATA_PROTOCOL_PIO_IN)
		cmd->protocol = ATA_PROTOCOL_NON_DATA;
}

static void atapi_identify_packet_device(struct atapi *cd, uint16_t *id)
{
	memset(id, 0, 512);
	id[0] = 0x85C0; /* ATAPI, CD-ROM, removable, 12-byte packets */
	ata_identify_string(&id[10], 10, cd->serial);
	ata_identify_string(&id[23], 4, "0.1.0");
	ata_identify_string(&id[27], 20, "IMGVM DVD-ROM");
	id[49] = 0x0B00; /* IORDY, LBA, DMA */
	id[53] = 0x0006;
	id[63] = 0x0407;
	id[64] = 0x0003;
	id[65] = id[66] = id[67] = id[68] = 120;
	id[76] = 0x0006; /* SATA Gen2 and Gen1 */
	id[80] = 0x01F0;
	id[82] = 0x4210; /* NOP, DEVICE RESET, PACKET */
	id[83] = 0x4000;
	id[84] = 0x4000;
	id[85] = 0x4210;
	id[86] = 0x0000;
	id[87] = 0x4000;
	id[88] = 0x203F; /* UDMA 0-5, mode 5 selected */
	ata_identify_checksum(id);
}

static void atapi_signature(struct ata_command *cmd)
{
	cmd->out_count = 0x01;
	cmd->out_lba = (ATA_SIGNATURE_ATAPI >> 8) & 0xFFFFFF;
	cmd->out_device = 0;
}

void atapi_execute(struct atapi *cd, struct ata_command *cmd)
{
	uint16_t identify[256];

	cmd->protocol = ATA_PROTOCOL_NON_DATA;
	cmd->transferred = 0;
	cmd->out_count = cmd->count;
	cmd->out_lba = cmd->lba;
	cmd->out_device = cmd->device;
	pthread_mutex_lock(&cd->lock);
	switch (cmd->command) {
	case 0xA0: /* PACKET */
		atapi_packet(cd, cmd);
		break;
	case 0xA1: /* IDENTIFY PACKET DEVICE */
		atapi_identify_packet_device(cd, identify);
		cmd->protocol = ATA_PROTOCOL_PIO_IN;
		cmd->transferred =
			ata_buffer_write(cmd, identify, sizeof(identify));
		ata_command_ok(cmd);
		break;
	case 0x08: /* DEVICE RESET */
		atapi_signature(cmd);
		cmd->status = 0;
		cmd->error = 0;
		break;
	case 0x90: /* EXECUTE DEVICE DIAGNOSTIC */
		atapi_signature(cmd);
		cmd->status = 0;
		cmd->error = 0x01;
		break;
	case 0xEF: /* SET FEATURES: transfer mode and the like */
		if ((cmd->features & 0xFF) == 0x03 ||
		    (cmd->features & 0xFF) == 0x02 ||
		    (cmd->features & 0xFF) == 0x82)
			ata_command_ok(cmd);
		else
			ata_command_abort(cmd, ATA_ERROR_ABRT);
		break;
	case 0xE5: /* CHECK POWER MODE */
		cmd->out_count = 0xFF;
		ata_command_ok(cmd);
		break;
	case 0xE0: /* STANDBY IMMEDIATE */
	case 0xE1: /* IDLE IMMEDIATE */
	case 0xE6: /* SLEEP */
		ata_command_ok(cmd);
		break;
	case 0xEC: /* IDENTIFY DEVICE: aborted, with the signature */
	default:
		atapi_signature(cmd);
		ata_command_abort(cmd, ATA_ERROR_ABRT);
		break;
	}
	pthread_mutex_unlock(&cd->lock);
}
