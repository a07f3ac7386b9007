export declare const BUILD_INPUTS: readonly string[];
export declare const STAMP_FILE: string;
export declare function sourceHash(root: string): string;
export declare function builtHash(root: string): string | undefined;
