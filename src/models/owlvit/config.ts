// OWL-ViT and OWLv2 configuration from a Hugging Face OwlViTConfig / Owlv2Config (config.json of
// OwlViTForObjectDetection / Owlv2ForObjectDetection): the same towers and heads, OWLv2 adding an
// objectness head and its own pre- and post-processing (the image padded to a square).
import { clipConfigFromHf, type TextConfig, type VisionConfig } from '../clip/config.js';

/** Which detector a folder holds: HF's model_type. */
export type OwlModelType = 'owlvit' | 'owlv2';

export interface OwlVitConfig {
  /** 'owlvit' (OWL-ViT v1) or 'owlv2' (objectness head; images padded to a square before resizing). */
  modelType: OwlModelType;
  vision: VisionConfig;
  text: TextConfig;
  /** Width of text_embeds (text_projection's output); the class head maps patches to the text width. */
  embedDim: number;
  /** Patches per side of the square input: image_size / patch_size. */
  gridSize: number;
}

/**
 * An OwlViTConfig or Owlv2Config object (both towers; text pooled at the argmax of the ids, as both
 * do). `fallback` is the type assumed when the config has no model_type (e.g. from the weight names).
 */
export function owlVitConfigFromHf(o: Record<string, unknown>, fallback: OwlModelType = 'owlvit'): OwlVitConfig {
  const modelType = o.model_type ?? fallback;
  if (modelType !== 'owlvit' && modelType !== 'owlv2') {
    throw new Error(`model_type is ${JSON.stringify(o.model_type)}, expected "owlvit" (OwlViTForObjectDetection) or "owlv2" (Owlv2ForObjectDetection)`);
  }
  const clip = clipConfigFromHf({ ...o, model_type: modelType });
  if (!clip.vision || !clip.text) throw new Error(`an ${modelType === 'owlv2' ? 'OWLv2' : 'OWL-ViT'} config needs both vision_config and text_config`);
  const { vision, text, embedDim } = clip;
  // The class head's output (text width) is compared with text_embeds (projection width).
  if (text.width !== embedDim) throw new Error(`text_config.hidden_size ${text.width} must equal projection_dim ${embedDim}: the class head compares them`);
  return { modelType, vision, text, embedDim, gridSize: vision.imageSize / vision.patchSize };
}
