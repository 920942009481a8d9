/*
 * The part of libkrun's C API (libkrun 1.19.x, include/libkrun.h) that krunner uses,
 * written for the project so that bindings can be generated on hosts without a libkrun
 * development package. Every function returns 0 (or a context id) on success and a
 * negative errno on failure. krun_start_enter() does not return when the guest starts.
 */
#ifndef KRUNNER_LIBKRUN_H
#define KRUNNER_LIBKRUN_H

#include <stdbool.h>
#include <stdint.h>

int32_t krun_set_log_level(uint32_t level);
int32_t krun_create_ctx(void);
int32_t krun_free_ctx(uint32_t ctx_id);
int32_t krun_set_vm_config(uint32_t ctx_id, uint8_t num_vcpus, uint32_t ram_mib);
int32_t krun_set_root(uint32_t ctx_id, const char *root_path);
int32_t krun_add_virtiofs(uint32_t ctx_id, const char *c_tag, const char *c_path);
/* shm_size 0 = no DAX window; read_only makes the share read-only for the guest. */
int32_t krun_add_virtiofs3(uint32_t ctx_id, const char *c_tag, const char *c_path,
                           uint64_t shm_size, bool read_only);
int32_t krun_set_workdir(uint32_t ctx_id, const char *workdir_path);
int32_t krun_set_exec(uint32_t ctx_id, const char *exec_path, const char *const argv[],
                      const char *const envp[]);
int32_t krun_set_rlimits(uint32_t ctx_id, const char *const rlimits[]);
int32_t krun_set_port_map(uint32_t ctx_id, const char *const port_map[]);
int32_t krun_set_console_output(uint32_t ctx_id, const char *c_filepath);
int32_t krun_get_max_vcpus(void);
int32_t krun_start_enter(uint32_t ctx_id);

#endif
