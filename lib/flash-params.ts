/** The forward kernel's parameter packer, generated from native/kernels/interface/flash_fwd_params.json. @module */
export * from './cuda/generated/flash-fwd-params.js';
