/* SPDX-License-Identifier: MIT */
/*
 * VM definitions: a named VM is a folder $IMGVM_HOME/NAME/ (default
 * $XDG_DATA_HOME/imgvm, i.e. ~/.local/share/imgvm) holding vm.json:
 *
 *   { "imgvm-vm": 1, "name": "lab",
 *     "options": { "memory": "2G", "disk": [ "/abs/lab.vdi" ],
 *                  "cdrom": "/abs/installer.iso", "no-reboot": true } }
 *
 * "options" holds `imgvm boot` options by name (without "--"): a string
 * for an option with a value, an array of strings for a repeatable one,
 * true for a flag.  Starting the VM turns them back into argv for the boot
 * parser, so every boot option is a definition option too.
 */
#ifndef IMGVM_VMDEF_H
#define IMGVM_VMDEF_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#define VMDEF_NAME_MAX 64
#define VMDEF_FILE "vm.json"
#define VMDEF_CONTROL "control.sock"
#define VMDEF_CONSOLE "console.log"
#define VMDEF_LOG "imgvm.log"
#define VMDEF_LOCK "lock"
/* a definition file is small; a larger one is refused unread */
#define VMDEF_SIZE_MAX (1u << 20)

/* Letters, digits, '-', '_', '.'; not starting with '.' or '-'; at most
 * VMDEF_NAME_MAX bytes. */
int vmdef_check_name(const char *name, char *err, size_t errlen);

/* $IMGVM_HOME, else $XDG_DATA_HOME/imgvm, else $HOME/.local/share/imgvm. */
int vmdef_home(char *out, size_t len, char *err, size_t errlen);
/* The VM's folder (its name checked). */
int vmdef_dir(const char *name, char *out, size_t len, char *err,
	      size_t errlen);

/* Parses and checks a definition file's text: the "options" object
 * (a new reference) on success.  Every option must be a boot option with
 * the right kind of value. */
int vmdef_parse(const char *text, size_t len, const char *name,
		json_object **options, char *err, size_t errlen);
/* Serialises a definition (pretty JSON, ends with a newline); free(). */
char *vmdef_format(const char *name, json_object *options);

/* Applies command-line options (argv[0..argc-1], "--name VALUE",
 * "--name=VALUE", "--flag", "--unset NAME") to options.  A repeatable option
 * given here replaces the stored list; VALUE "none" removes an option.
 * Relative file names become absolute.  "--disk new:FMT:SIZE[,...]" creates
 * a disk in dir (NAME.FMT, NAME-2.FMT, ...) when dir is not NULL. */
int vmdef_apply_args(json_object *options, int argc, char **argv,
		     const char *name, const char *dir, json_object *created,
		     char *err, size_t errlen);
/* Removes the files listed in created (disks apply_args made). */
void vmdef_remove_created(json_object *created);

/* Whether a VM's folder is held by a running imgvm (its lock file);
 * vmdef_lock takes it: an fd to keep open while the VM runs, or -EBUSY. */
bool vmdef_running(const char *dir);
int vmdef_lock(const char *dir, char *err, size_t errlen);
/* mkdir -p of path (mode 0700 for what it creates). */
int vmdef_mkdirs(const char *path);

/* The boot command line ("boot", then the options); strings are copies.
 * vmdef_free_argv frees. */
int vmdef_to_argv(json_object *options, int *argc, char ***argv);
void vmdef_free_argv(int argc, char **argv);

/* Runs the options through the boot parser (its errors on stderr). */
int vmdef_check_options(json_object *options);

/* imgvm create and modify: applies argv to options, checks them and saves
 * the definition; on failure the disks it created are removed again.
 * 0, or negative with the reason on stderr. */
int vmdef_update(json_object *options, int argc, char **argv, const char *name,
		 const char *dir);

/* Reads and parses NAME's vm.json. */
int vmdef_load(const char *name, json_object **options, char *err,
	       size_t errlen);
/* Writes NAME's vm.json atomically: a temporary file in the folder, fsync,
 * rename over the old one, fsync of the folder. */
int vmdef_save(const char *name, json_object *options, char *err,
	       size_t errlen);

/* The disks a definition names (the path part of each "disk"), for
 * delete --delete-disks; *count entries, free() the array only. */
const char **vmdef_disks(json_object *options, size_t *count,
			 bool writable_only);

#endif
