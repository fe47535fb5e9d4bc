/* roottmpl.h - the sandbox root's fixed part, made once per host.
 *
 * Every sandbox's root has the same skeleton: the mount points (usr, etc,
 * dev, proc, tmp, work), the top-level links of merged /usr (bin -> usr/bin,
 * ...), a generated /etc (passwd, group, hosts, resolv.conf, nsswitch.conf,
 * hostname, the rootfs's ld.so.cache), and /dev's five node files and four
 * links. Init used to write it on a fresh tmpfs in every run: about 40
 * syscalls and 0.13 ms on the way to the program. A privileged engine now
 * writes it once, as a plain directory <state_dir>/root-<key>, and init
 * bind-mounts that read-only as its root, then mounts /usr, the devices, the
 * workspace and /proc on top, as before (docs/sandbox.md, "root template").
 *
 * The key hashes everything the skeleton depends on: this format's version
 * and the skeleton's tables (names, /etc's texts), the rootfs directory, the identity (device, inode, size, mtime) of its
 * etc/ld.so.cache, and what each top-level name is there (its link target,
 * a directory, or absent). A changed host (ldconfig, usrmerge) gets a new
 * template; old ones are pruned when a new one is made, once unused for a day
 * (or ten minutes after their rootfs directory is gone: <template>.src names
 * it)
 * (a use refreshes a template's mtime when it is over an hour old, and no run
 * lasts a day). The template is owned by root and not writable by anyone
 * else (checked on every use), in the root-owned state directory; inside a
 * sandbox its files show as nobody's, like /usr, and its mount is read-only.
 *
 * Threads: safe (a mutex guards the per-process cache). Errors: -errno with
 * words in err. */
#ifndef CLEARBOX_SANDBOX_ROOTTMPL_H
#define CLEARBOX_SANDBOX_ROOTTMPL_H

#include <stddef.h>

/* The skeleton: mount points, top-level names of merged /usr, /dev's
 * nodes (files to bind the host's on) and links, the generated /etc. */
#define ROOTTMPL_NDIRS 6
#define ROOTTMPL_NTOPS 6
#define ROOTTMPL_NDEVS 5
#define ROOTTMPL_NLINKS 4
#define ROOTTMPL_NETC 6
extern const char *const roottmpl_dirs[ROOTTMPL_NDIRS];
extern const char *const roottmpl_tops[ROOTTMPL_NTOPS];
extern const char *const roottmpl_devs[ROOTTMPL_NDEVS];
struct roottmpl_pair {
    const char *name, *text;
};
extern const struct roottmpl_pair roottmpl_etc[ROOTTMPL_NETC];
extern const struct roottmpl_pair roottmpl_dev_links[ROOTTMPL_NLINKS];

/* Write the skeleton for rootfs into the empty directory dir: the template's
 * build, and init's own on its tmpfs when it has no template (unprivileged
 * runs). No allocation, system calls and snprintf only: safe in init. */
int roottmpl_build(const char *dir, const char *rootfs, char *err, size_t errlen);

/* The template for rootfs ("" = the host) under state_dir, made if missing:
 * its path in out. Only as root (the template must be root's). */
int roottmpl_ensure(const char *state_dir, const char *rootfs, char *out, size_t outlen,
                    char *err, size_t errlen);

#endif
