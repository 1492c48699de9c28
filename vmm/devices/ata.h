/* SPDX-License-Identifier: MIT */
/*
 * imgvm: what the AHCI HBA (ahci.c) hands to the devices behind its ports,
 * the SATA disk (ata_disk.c) and the SATAPI CD-ROM (atapi.c): one decoded
 * ATA command with its data buffer already mapped from the PRDT.
 * Command codes and IDENTIFY layout: ATA8-ACS; packets: MMC-5 / SPC-3.
 */
#ifndef IMGVM_ATA_H
#define IMGVM_ATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct img;

/* Status register */
#define ATA_STATUS_ERR 0x01
#define ATA_STATUS_DRQ 0x08
#define ATA_STATUS_DSC 0x10
#define ATA_STATUS_DF 0x20
#define ATA_STATUS_DRDY 0x40
#define ATA_STATUS_BSY 0x80
/* Error register */
#define ATA_ERROR_ABRT 0x04
#define ATA_ERROR_IDNF 0x10
#define ATA_ERROR_UNC 0x40

/* Device signatures (PxSIG: LBA high, LBA mid, LBA low, count) */
#define ATA_SIGNATURE_DISK 0x00000101u
#define ATA_SIGNATURE_ATAPI 0xEB140101u

enum ata_protocol {
	ATA_PROTOCOL_NON_DATA,
	ATA_PROTOCOL_PIO_IN, /* PIO Setup FIS, device to host */
	ATA_PROTOCOL_PIO_OUT,
	ATA_PROTOCOL_DMA,
};

struct ata_command {
	/* in: the H2D register FIS, decoded */
	uint8_t command;
	uint16_t features;
	uint16_t count;
	uint64_t lba; /* 48 bits */
	uint8_t device;
	bool is_write;	    /* command header W bit */
	uint8_t packet[16]; /* ATAPI command (ACMD) */
	/* in: the data buffer (guest memory described by the PRDT) */
	const struct iovec *iov;
	int iovcnt;
	size_t buffer_bytes;

	/* out: ending status, registers for the D2H FIS */
	uint8_t status;
	uint8_t error;
	uint16_t out_count;
	uint64_t out_lba;
	uint8_t out_device;
	enum ata_protocol protocol;
	size_t transferred; /* bytes moved through the buffer */
};

/* ---- helpers shared by the devices (ata_disk.c) ------------------------*/

/* Copy len bytes of src into the command's buffer (at most its size);
 * returns the count copied. */
size_t ata_buffer_write(struct ata_command *cmd, const void *src, size_t len);
/* Copy up to len bytes from the command's buffer into dst. */
size_t ata_buffer_read(const struct ata_command *cmd, void *dst, size_t len);
/* An IDENTIFY string: space padded, two characters per word, swapped. */
void ata_identify_string(uint16_t *words, unsigned nwords, const char *text);
/* Word 255: signature 0xA5 and the checksum making the 512 bytes sum 0. */
void ata_identify_checksum(uint16_t *identify);
void ata_command_ok(struct ata_command *cmd);
void ata_command_abort(struct ata_command *cmd, uint8_t error);

/* ---- the SATA disk (ata_disk.c) ----------------------------------------*/

struct ata_disk;
struct ata_disk *ata_disk_create(struct img *img, bool read_only,
				 unsigned port);
void ata_disk_destroy(struct ata_disk *disk); /* flushes */
/* Power-on defaults (write cache on, multiple count). */
void ata_disk_reset(struct ata_disk *disk);
/* Runs one command: fills the out fields.  Thread-safe per disk. */
void ata_disk_execute(struct ata_disk *disk, struct ata_command *cmd);
/* NCQ: READ/WRITE FPDMA QUEUED; tag from the count field. */
bool ata_command_is_ncq(uint8_t command);
/* READ LOG EXT page 10h needs the tag of the last failed NCQ command. */
void ata_disk_set_ncq_error(struct ata_disk *disk, unsigned tag, bool failed);
/* Bytes the guest has read and written so far. */
void ata_disk_counters(struct ata_disk *disk, uint64_t *read,
		       uint64_t *written);

/* ---- the SATAPI CD-ROM (atapi.c) ---------------------------------------*/

struct atapi;
/* path NULL: a drive with an empty tray. */
struct atapi *atapi_create(const char *path, unsigned port, char *err,
			   size_t errlen);
void atapi_destroy(struct atapi *cd);
void atapi_reset(struct atapi *cd);
/* Opens the tray and takes the disc out; the guest sees a media change. */
void atapi_eject(struct atapi *cd);
/* Puts the ISO at path in the drive (closing the tray); the guest sees a
 * new medium.  Errors as one line in err. */
int atapi_insert(struct atapi *cd, const char *path, char *err, size_t errlen);
/* A copy of the file name of the disc in the drive (NULL: empty). */
char *atapi_medium(struct atapi *cd);
void atapi_execute(struct atapi *cd, struct ata_command *cmd);

#endif
