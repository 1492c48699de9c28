/* SPDX-License-Identifier: MIT */
/*
 * OVA appliances (DMTF OVF 1.0 in a tar): export a VM definition with its
 * disks as streamOptimized VMDKs, import one made by imgvm, VirtualBox or
 * VMware into a new VM definition.  XML through libxml2, the tar through
 * libarchive, digests through OpenSSL, disks converted by imgtool.
 */
#ifndef IMGVM_OVA_H
#define IMGVM_OVA_H

#include <stddef.h>

#include <json-c/json.h>

/* Writes name's appliance to path (a temporary file renamed at the end):
 * NAME.ovf first, then NAME.mf (SHA256 of each file), then the disks. */
int ova_export(const char *name, json_object *options, const char *path,
	       char *err, size_t errlen);

/* Describes an OVF descriptor's machine: what import makes of it. */
struct ova_machine {
	char name[65];
	unsigned cpus;		       /* 0: not given */
	unsigned long long memory_mib; /* 0: not given */
	unsigned ndisks;
	/* disk i's file in the appliance (References href), in the order of
	 * their controller addresses */
	char disk_file[8][128];
	unsigned long long disk_capacity[8];
};

/* Parses an OVF descriptor (untrusted: no network, no entities). */
int ova_parse_descriptor(const char *text, size_t len, struct ova_machine *m,
			 char *err, size_t errlen);

/* Imports the appliance at path as VM name (NULL: the OVF's name), its
 * disks converted to format (NULL: vdi) in the VM's folder. */
int ova_import(const char *path, const char *name, const char *format,
	       char *err, size_t errlen);

#endif
