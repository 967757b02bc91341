// OWL-ViT configuration from a Hugging Face OwlViTConfig (config.json of OwlViTForObjectDetection).
import { clipConfigFromHf, type TextConfig, type VisionConfig } from '../clip/config.js';

export interface OwlVitConfig {
  vision: VisionConfig;
  text: TextConfig;
  /** Width of text_embeds (text_projection's output); the class head maps patches to the text width. */
  embedDim: number;
  /** Patches per side of the square input: image_size / patch_size. */
  gridSize: number;
}

/** An OwlViTConfig object (both towers; text pooled at the argmax of the ids, as OWL-ViT does). */
export function owlVitConfigFromHf(o: Record<string, unknown>): OwlVitConfig {
  if (o.model_type !== undefined && o.model_type !== 'owlvit') {
    throw new Error(`model_type is ${JSON.stringify(o.model_type)}, expected "owlvit" (OwlViTForObjectDetection)`);
  }
  const clip = clipConfigFromHf({ ...o, model_type: 'owlvit' });
  if (!clip.vision || !clip.text) throw new Error('an OWL-ViT config needs both vision_config and text_config');
  const { vision, text, embedDim } = clip;
  // The class head's output (text width) is compared with text_embeds (projection width).
  if (text.width !== embedDim) throw new Error(`text_config.hidden_size ${text.width} must equal projection_dim ${embedDim}: the class head compares them`);
  return { vision, text, embedDim, gridSize: vision.imageSize / vision.patchSize };
}
